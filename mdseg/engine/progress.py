"""Progress of long work: a Rich bar on stderr, a caller's callback, or nothing — one reporter for every command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

# Called as `progress(done, total)` after each step of work.
ProgressCallback = Callable[[int, int], None]


@contextmanager
def progress_reporter(
    progress: bool | ProgressCallback, total: int, unit: str = "tiles"
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`: moves a Rich bar over `total` `unit` on stderr, with their rate (True), calls
    `progress(done, total)` (a callable), or does nothing (False)."""
    if progress is True:
        columns = (TextColumn(unit), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
        with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as bar:
            task = bar.add_task(unit, total=total, rate="")

            def advance(n: int) -> None:
                bar.advance(task, n)
                speed = bar.tasks[task].speed
                bar.update(task, rate=f"{speed:.1f} {unit}/s" if speed else "")

            yield advance
    elif callable(progress):
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        yield advance
    else:
        yield lambda n: None
