"""`mdseg synth`: seeded synthetic WHU-style scenes (one, or a train/val dataset of them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdseg.cli import options as opt_
from mdseg.cli.console import console, step_progress
from mdseg.errors import OptionError


def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives identical files.")] = 0,
    size: Annotated[int, typer.Option("--size", help="Scene width and height in pixels (5 m each).")] = 1024,
    scenes: Annotated[
        int, typer.Option("--scenes", min=1, help="1: one scene's three files in OUT; more: a train/val dataset.")
    ] = 1,
    val: Annotated[
        int | None, typer.Option("--val", min=0, help="Validation scenes of a dataset. Default: a fifth of --scenes.")
    ] = None,
    overwrite: opt_.Overwrite = False,
) -> None:
    """Write a synthetic WHU-style scene (optical RGB+NIR, SAR VV in dB, label; UTM, 5 m), or a dataset of them.

    One scene: OUT/synth_<seed>_opt.tif, _sar.tif, _label.tif. With --scenes N > 1: a dataset in the generic layout,
    OUT/train|val/opt|sar|label/synth_<seed>_<i>.tif and OUT/classes.json (WHU-OPT-SAR's 7 classes).
    """
    from mdseg.synth import synthesize_dataset, synthesize_scene

    if scenes == 1:
        if val:
            raise OptionError("--val needs --scenes of 2 or more.")
        files = synthesize_scene(out, seed=seed, size=size, overwrite=overwrite)
        console.print(f"wrote {files.opt}, {files.sar}, {files.label} ({size}×{size} px, seed {seed})", highlight=False)
        return
    with step_progress(scenes, "scenes") as advance:
        data = synthesize_dataset(
            out, scenes=scenes, seed=seed, size=size, val=val, overwrite=overwrite, progress=lambda i: advance(1)
        )
    console.print(
        f"wrote {len(data.train)} train + {len(data.val)} val scenes ({size}×{size} px, seed {seed}) and "
        f"classes.json to {data.root}",
        highlight=False,
    )
