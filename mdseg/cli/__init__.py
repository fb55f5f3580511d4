"""The `mdseg` command line: one module per command, thin wrappers over library functions.

Options several commands share are declared once in `mdseg.cli.options`. Errors meant for users (`MdsegError`)
are caught once, in `main`, and printed as one line; the exit status tells their kind (`EXIT_STATUSES`).
The root options set up logging: the library's `mdseg.*` loggers go to stderr through Rich (`-v`, `--log-file`).
A stop signal (SIGINT, SIGTERM, SIGHUP) is turned into `mdseg.errors.Interrupted` (see `stop_signals`): the
command unwinds, removing its temporaries, and `main` prints one line and exits with 128 + the signal.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mdseg import alloc
from mdseg.cli import evaluate, import_weights, info, predict, quicklook, stats, synth, train
from mdseg.cli.console import configure_logging, err_console, reset_logging
from mdseg.errors import Interrupted, MdsegError

EXIT_STATUSES = (
    "Exit statuses: 0 done; 1 an unexpected failure (a bug: please report it); 2 a usage error (an unknown or "
    "missing option, a bad option value); 3 an input, output or checkpoint problem (a missing or unreadable file, "
    "an output that exists); 4 a batch in which some scenes failed (the others were written); 128 + N stopped by "
    "signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."
)

app = typer.Typer(
    name="mdseg",
    help="Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model.",
    epilog=EXIT_STATUSES,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from mdseg import __version__
        from mdseg.cli.console import console  # here: a module-level import would hide the module `cli.console`

        console.print(f"mdseg {__version__}", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="Tell more on stderr: -v the library's notes (INFO), -vv DEBUG."
        ),
    ] = 0,
    log_file: Annotated[
        Path | None,
        typer.Option("--log-file", dir_okay=False, help="Also append the library's log messages (INFO and up) here."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print mdseg's version and exit."),
    ] = False,
) -> None:
    """Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model."""
    configure_logging(verbose, log_file)


app.command("info")(info.info)
app.command("predict", epilog=predict.PAIRING_HELP)(predict.predict)
app.command("eval")(evaluate.eval_)
app.command("stats")(stats.stats)
app.command("train", epilog=train.TRAIN_HELP)(train.train)
app.command("synth")(synth.synth)
app.command("quicklook")(quicklook.quicklook_)
app.command("import-weights")(import_weights.import_weights)


def main() -> None:
    """Console-script entry point: every error is one line on stderr, its exit status saying which kind
    (`EXIT_STATUSES`): usage errors 2, `MdsegError` its class's `exit_status` (3; 2 for an option; 4 for a batch);
    `--help` and no arguments print the help."""
    alloc.configure()  # before any tile's memory: glibc keeps freed blocks for reuse (`mdseg.alloc`)
    try:
        with stop_signals():
            # One name in help and messages, however started (`python -m mdseg` too).
            code = app(standalone_mode=False, prog_name="mdseg")
    except typer.TyperException as exc:  # Click's errors (Typer vendors Click): usage errors and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already (Typer tells it so too)
            sys.exit(exc.exit_code)
        _error(usage_line(exc), getattr(exc, "exit_code", 2))
    except typer.Abort:
        _error("aborted", 1)
    except MdsegError as exc:
        _error(str(exc), exc.exit_status)
    except (Interrupted, KeyboardInterrupt) as exc:  # KeyboardInterrupt: raised by code itself, taken as a Ctrl-C
        _interrupted(getattr(exc, "signum", signal.SIGINT))
    except OSError as exc:  # last resort: a read or write no layer below put in words (it may not name the file)
        _error(os_error_line(exc), MdsegError.exit_status)
    finally:
        reset_logging()
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


# The signals that ask a command to stop: Ctrl-C, what schedulers, `timeout` and `docker stop` send, a closed terminal.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise `Interrupted(signum)` in the main thread, wherever it is,
    so every `with` block unwinds and removes its temporaries; the previous handlers are restored after the block.

    A repeat while that `Interrupted` is being handled (its `except`, `finally` and `__exit__` clean-ups) is ignored,
    so a second Ctrl-C cannot cut the clean-up short; one after an `Interrupted` was swallowed (Python drops what a
    `__del__` or a C library's callback raises) stops the run again. Python runs a handler between bytecodes of the
    main thread: a stop waits for the C call under way (a torch op, a GDAL conversion) to return. Outside the main
    thread, where handlers cannot be installed, the block runs without them. Training installs its own handlers
    inside the block (it finishes the iteration and saves; `mdseg.engine.train.stop`). Here, not in
    `mdseg.runtime`: that imports torch, which would make `--help` and every usage error seconds slower.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if not _handling_interrupted():
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is the nearest
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _handling_interrupted() -> bool:
    """Whether the code running now handles an `Interrupted`: in an `except` or `finally` it reached, or in a
    handler of an error raised there."""
    exc = sys.exc_info()[1]
    for _ in range(100):  # a chain of contexts is short; the bound guards against a cycle
        if exc is None:
            return False
        if isinstance(exc, Interrupted):
            return True
        exc = exc.__context__
    return False


def _interrupted(signum: int) -> None:
    """After a stop signal, the command's clean-up done: one line naming the signal, and exit 128 + `signum` at once.

    The exit skips the interpreter's own finalisation (after the exit handlers have run): collecting torch's and
    numba's objects took 1–8 s after a stop on a busy 2-core machine, for nothing a stopped run needs."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # a repeat now would only cut the line short
    line = f"interrupted by {signal.Signals(signum).name}; unfinished outputs were removed"
    with contextlib.suppress(OSError, ValueError):  # a hung-up terminal (SIGHUP) cannot show it
        err_console.print(line, highlight=False, markup=False)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    atexit._run_exitfuncs()  # what `sys.exit` would run: temporary folders, logging, worker processes
    os._exit(128 + signum)
