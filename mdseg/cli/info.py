"""`mdseg info`: versions, threads, devices and scan backends; optionally a model preset's cost."""

from __future__ import annotations

import typer

from mdseg.cli.console import console


def info(
    model: str | None = typer.Option(
        None, "--model", help="Also cost a model preset (tiny, small, paper): parameters and GFLOPs per tile."
    ),
    tile: int = typer.Option(256, "--tile", min=32, help="Tile size in pixels for the GFLOPs count."),
) -> None:
    """Show versions, threads, CUDA devices and which selective-scan backend runs where."""
    from mdseg.info import environment_report, model_report

    console.print(environment_report())
    if model is not None:
        console.print(model_report(model, tile))
