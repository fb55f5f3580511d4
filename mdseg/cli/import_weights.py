"""`mdseg import-weights`: the authors' released MambaDiffusion weights → an mdseg checkpoint."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mdseg.cli import options as opt_
from mdseg.cli.console import console, err_console


class ReleaseDataset(str, Enum):
    whu = "whu"
    hunan = "hunan"


def import_weights(
    source: Annotated[
        Path,
        typer.Argument(help="The authors' released checkpoint (.pth): an MMSegmentation checkpoint or a state dict."),
    ],
    out: Annotated[Path, typer.Option("--out", help="mdseg checkpoint to write (.safetensors).")],
    overwrite: opt_.Overwrite = False,
    classes: Annotated[
        ReleaseDataset,
        typer.Option(
            "--classes",
            help="Dataset the weights were trained on: its classes, palette, band order and normalisation go into "
            "the checkpoint.",
        ),
    ] = ReleaseDataset.whu,
    inference_scale: Annotated[
        float,
        typer.Option(
            "--inference-scale",
            min=0.0,
            help="Input resampling factor before the model; 2.0 is the authors' WHU test setting (256² tiles "
            "upsampled to 512²).",
        ),
    ] = 2.0,
) -> None:
    """Convert the authors' released MambaDiffusion weights into an mdseg checkpoint, accounting for every tensor.

    Reads the .pth with torch.load(weights_only=True) only (never unpickles anything else), maps the release's
    names to ours, drops the weights the release never uses, checks every shape, and prints the report.
    """
    from mdseg.release import import_release_checkpoint

    # The step under way (reading, converting, writing) on a terminal; -v logs each step as a line anywhere.
    with err_console.status("importing") as status:
        result = import_release_checkpoint(
            source, out, dataset=classes.value, inference_scale=inference_scale, overwrite=overwrite,
            progress=status.update,
        )  # fmt: skip
    for line in result.report.lines():
        console.print(line, highlight=False, markup=False)
    meta, config = result.meta, result.meta.config
    console.print(
        f"wrote {result.path}: {result.release_tensors} release tensors accounted for; {config.opt_bands} optical "
        f"+ {config.sar_bands} SAR bands, {config.num_classes} classes ({meta.provenance['dataset']}), tile "
        f"{meta.tile} px, inference scale {meta.inference_scale:g}, {meta.steps} DDIM steps",
        highlight=False,
        markup=False,
    )
