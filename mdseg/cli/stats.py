"""`mdseg stats`: per-band mean and std of a dataset split, for normalisation."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from mdseg.cli import options as opt_
from mdseg.cli.console import console, err_console, step_progress


def stats(
    data: opt_.DataDir,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Split name, folder or list file, e.g. the split `mdseg train` drew for a dataset without splits: "
            "runs/NAME/splits/train.txt. Default: all files, or train/ in a split dataset.",
        ),
    ] = None,
    opt_bands: opt_.OptBands = None,
    sar_bands: opt_.SarBands = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
) -> None:
    """Per-band mean and std of a dataset split (streamed, nodata skipped; SAR in dB) for normalisation."""
    from mdseg.data.layout import find_dataset
    from mdseg.data.stats import band_stats

    layout = find_dataset(data, split, opt_bands=opt_bands, sar_bands=sar_bands)
    with step_progress(2 * len(layout.samples), "files") as advance:
        result = band_stats(layout, progress=lambda done, total: advance(1))
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    info = result.provenance
    table = Table(title=f"{info['root']} — {info['layout']}, split {info['split'] or 'all'}, {info['files']} files")
    for column in ("modality", "band", "name", "mean", "std", "valid px", "skipped px"):
        table.add_column(column, justify="left" if column in ("modality", "name") else "right")
    for b in result.bands:
        table.add_row(
            b.modality, str(b.band), b.name, f"{b.mean:.4g}", f"{b.std:.4g}", f"{b.count:,}", f"{b.skipped:,}"
        )
    console.print(table)
    err_console.print(result.sar_scaling.describe(), highlight=False)
