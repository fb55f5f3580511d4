"""Stopping a run cleanly: Ctrl-C or SIGTERM ask the loop to stop after the current iteration (it saves a resumable
state first), and the `DataLoader` workers leave both signals to the main process."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopRequest:
    """Within the block, Ctrl-C / SIGTERM set `requested` instead of interrupting (a second Ctrl-C interrupts at
    once); the loop checks it after each iteration. The previous handlers are restored after the block."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


def ignore_stop_signals(worker_id: int) -> None:
    """`worker_init_fn` for the DataLoader: its workers leave Ctrl-C and SIGTERM (which reach the whole process
    group, e.g. from a batch scheduler) to the main process, which finishes the iteration, saves, and shuts them
    down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _in_main_thread() -> bool:
    """Signal handlers can only be installed from the main thread."""
    return threading.current_thread() is threading.main_thread()


__all__ = ["StopRequest", "ignore_stop_signals"]
