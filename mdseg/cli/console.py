"""Where the command line writes: results on stdout; notes, progress, log messages and errors on stderr."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from mdseg.errors import OutputError

console = Console()
# soft_wrap: an error stays one line in logs and pipes, whatever the terminal width
err_console = Console(stderr=True, soft_wrap=True)


def note(text: str) -> None:
    """One plain line for the user on stderr (no markup, no highlighting)."""
    err_console.print(text, highlight=False, markup=False)


# What `configure_logging` installed on the `mdseg` logger; `reset_logging` removes it and closes the log file.
_handlers: list[logging.Handler] = []


def configure_logging(verbose: int = 0, log_file: Path | None = None) -> None:
    """Send the library's log messages (the `mdseg` loggers) to stderr through Rich: warnings by default, INFO with
    one `-v`, DEBUG with two. `log_file` gets the same messages, at least INFO, as plain timestamped lines.

    Only the `mdseg` logger is touched, so a Python user of the library keeps the standard logging API to route
    or silence the messages; calling this again replaces what the previous call installed."""
    from rich.logging import RichHandler

    reset_logging()
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    terminal = RichHandler(console=err_console, level=level, show_time=False, show_path=False, markup=False)
    terminal.setFormatter(logging.Formatter("%(message)s"))
    _handlers.append(terminal)
    if log_file is not None:
        try:
            file = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"Cannot open the log file '{log_file}': {exc.strerror or exc}.") from None
        file.setLevel(min(level, logging.INFO))
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _handlers.append(file)
    logger = logging.getLogger("mdseg")
    for handler in _handlers:
        logger.addHandler(handler)
    logger.setLevel(min(h.level for h in _handlers))


def reset_logging() -> None:
    """Remove the handlers `configure_logging` installed (closing the log file)."""
    logger = logging.getLogger("mdseg")
    while _handlers:
        handler = _handlers.pop()
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)


@contextlib.contextmanager
def step_progress(total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)` over `total` steps: a Rich bar on a terminal; elsewhere (a pipe, a log file, a batch
    job) one line per step on stderr, `<unit> 3/40`, since a bar there would print nothing until the end."""
    from mdseg.engine.progress import progress_reporter

    if err_console.is_terminal:
        progress: bool | Callable[[int, int], None] = True
    else:

        def progress(done: int, total: int) -> None:
            note(f"{unit} {done}/{total}")

    with progress_reporter(progress, total, unit) as advance:
        yield advance
