"""Stopping a run cleanly: Ctrl-C, SIGTERM or SIGHUP ask the loop to stop after the current iteration (it saves a
resumable state first), and the `DataLoader` workers leave those signals to the main process."""

from __future__ import annotations

import signal
import threading
from typing import Any

from mdseg.errors import Interrupted

# Ctrl-C, what schedulers, `timeout` and `docker stop` send, a closed terminal (the command line's own stop signals).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# The signal that last asked a training run of this process to stop: signal handlers are per process, and the
# command line's exit status (128 + the signal) must name the one that stopped the run.
_last_request: list[int] = []


class StopRequest:
    """Within the block, SIGINT, SIGTERM and SIGHUP set `requested` (and `signum`) instead of interrupting; the loop
    checks it after each iteration. A second Ctrl-C interrupts at once (`Interrupted`). The previous handlers are
    restored after the block."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if _in_main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise Interrupted(signum)
        if not self.requested:
            self.requested, self.signum = True, signum
            _last_request[:] = [signum]


def last_stop_signal() -> int | None:
    """The signal that last asked a training run of this process to stop (None: none did), for the exit status."""
    return _last_request[0] if _last_request else None


def ignore_stop_signals(worker_id: int) -> None:
    """`worker_init_fn` for the DataLoader: its workers leave SIGINT, SIGTERM and SIGHUP (which reach the whole
    process group, e.g. from a batch scheduler or a closed terminal) to the main process, which finishes the
    iteration, saves, and shuts them down itself."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _in_main_thread() -> bool:
    """Signal handlers can only be installed from the main thread."""
    return threading.current_thread() is threading.main_thread()


__all__ = ["StopRequest", "ignore_stop_signals", "last_stop_signal"]
