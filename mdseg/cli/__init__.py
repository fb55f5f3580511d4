"""The `mdseg` command line: one module per command, thin wrappers over library functions.

Options several commands share are declared once in `mdseg.cli.options`. Errors meant for users (`MdsegError`)
are caught once, in `main`, and printed as one line (exit status 2).
"""

from __future__ import annotations

import sys

import typer
from rich.text import Text

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
    """Console-script entry point: every error is one line on stderr. Usage errors (bad option values, unknown or
    missing options) and user errors (`MdsegError`) exit 2; `--help` and no arguments print the help."""
    try:
        # One name in help and messages, however started (`python -m mdseg` too).
        code = app(standalone_mode=False, prog_name="mdseg")
    except typer.TyperException as exc:  # Click's errors (Typer vendors Click): usage errors and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already (Typer tells it so too)
            sys.exit(exc.exit_code)
        _error(usage_line(exc), getattr(exc, "exit_code", 2))
    except typer.Abort:
        _error("aborted", 1)
    except MdsegError as exc:
        _error(str(exc), 2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # last resort: a read or write no layer below put in words (it may not name the file)
        _error(os_error_line(exc), 2)
    sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc: typer.TyperException) -> str:
    """A Click error as one line: `--opt-bands: band numbers start at 1; got '0' (see mdseg predict --help)`.

    A bad value names its option first; the others (missing or unknown option, extra argument) keep Click's
    words; a usage error ends with where the help is."""
    param = getattr(exc, "param", None)
    if isinstance(exc, typer.BadParameter) and exc.message:  # a missing option has no message of its own
        hint = exc.param_hint or (param.opts if param is not None and param.opts else None)
        hint = hint or (param.human_readable_name if param is not None else None)
        if isinstance(hint, (list, tuple)):
            hint = " / ".join(hint)
        # Typer checks values with pydantic, whose messages may start "Value error, ".
        message = exc.message.removeprefix("Value error, ")
        text = f"{hint}: {message}" if hint else message
    else:
        text = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        text += f" (see {ctx.command_path} --help)"
    return " ".join(text.split())


def os_error_line(exc: OSError) -> str:
    """An OSError (rasterio's read and write failures are some) as one line: its reason and, when known, the file."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f" ('{exc.filename}')" if exc.filename else ""
    return " ".join(f"{reason}{where}".split())


def _error(message: str, code: int) -> None:
    """Print `message` as one `error:` line on stderr (its text taken literally, never as markup) and exit."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    sys.exit(code)
