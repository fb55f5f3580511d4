"""The C allocator's settings for mdseg's processes: glibc malloc keeps freed memory for the next tile.

Each tile allocates and frees the same few hundred MiB of tensors and arrays. With glibc's defaults, blocks over
128 KiB (a threshold that adapts up to 32 MiB) are mapped fresh from the kernel and unmapped on free, and the
heap's top is given back once 128 KiB of it are free, so every tile touches new pages the kernel must fault in
and zero: a quarter of `mdseg predict`'s CPU time was the kernel clearing pages. Raising the mmap threshold to
its 32 MiB maximum is not enough at 8 tiles a batch (the `small` model's largest tensors are bigger: the model
alone still took 30 k faults a tile instead of 84 k). `configure` therefore serves every block from the heap (no
mmap) and never trims it, so freed blocks stay in the process and the next tile reuses them: `mdseg predict`
with `small` took 3 k faults a tile instead of 90 k (`bench/bench_predict.py --part faults`). The price: memory
freed after a peak stays with the process until it exits.

Applied at run time with `mallopt` (glibc reads its MALLOC_* variables only at process start), on glibc Linux only;
elsewhere it does nothing. `MDSEG_MALLOC=system` leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

ENV = "MDSEG_MALLOC"

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

SETTINGS = {
    M_MMAP_MAX: 0,  # blocks mapped at once: none, every block comes from the heap and returns to it
    M_TRIM_THRESHOLD: 2**31 - 1,  # bytes free at the heap's top before it is given back: never, in practice
    M_TOP_PAD: 64 * 2**20,  # bytes the heap grows by beyond a request, so it grows in few steps (untouched: no RSS)
}

_applied: dict[int, int] | None = None


def configure() -> dict[int, int]:
    """Apply `SETTINGS` to glibc malloc once per process; return what was applied ({} where nothing was: not glibc
    Linux, `MDSEG_MALLOC=system`, or glibc refused). Never raises."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> dict[int, int]:
    if os.environ.get(ENV, "").strip().lower() == "system":
        return {}
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return {param: value for param, value in SETTINGS.items() if mallopt(param, value) == 1}
