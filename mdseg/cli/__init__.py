"""The `mdseg` command line: one module per command, thin wrappers over library functions.

Options several commands share are declared once in `mdseg.cli.options`. Errors meant for users (`MdsegError`)
are caught once, in `main`, and printed as one line (exit status 2).
"""

from __future__ import annotations

import sys

import typer

from mdseg.cli import evaluate, import_weights, info, predict, quicklook, stats, synth, train
from mdseg.cli.console import err_console
from mdseg.errors import MdsegError

app = typer.Typer(
    name="mdseg",
    help="Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model."""


app.command("info")(info.info)
app.command("predict", epilog=predict.PAIRING_HELP)(predict.predict)
app.command("eval")(evaluate.eval_)
app.command("stats")(stats.stats)
app.command("train", epilog=train.TRAIN_HELP)(train.train)
app.command("synth")(synth.synth)
app.command("quicklook")(quicklook.quicklook_)
app.command("import-weights")(import_weights.import_weights)


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
