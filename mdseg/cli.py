"""The `mdseg` command line: thin wrappers over library functions.

Errors meant for users (`MdsegError`) are caught once, in `main`, and printed as one line (exit status 2).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from mdseg.errors import MdsegError

app = typer.Typer(
    name="mdseg",
    help="Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model."""


@app.command()
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


def main() -> None:
    """Console-script entry point: usage errors exit 2 (Typer's), user errors print one line and exit 2."""
    try:
        app()
    except MdsegError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
