"""Where the command line writes: results on stdout, notes, progress and errors on stderr."""

from __future__ import annotations

from rich.console import Console

console = Console()
# soft_wrap: an error stays one line in logs and pipes, whatever the terminal width
err_console = Console(stderr=True, soft_wrap=True)


def note(text: str) -> None:
    """One plain line for the user on stderr (no markup, no highlighting)."""
    err_console.print(text, highlight=False, markup=False)
