"""Why a file could not be read or written, in words: GDAL's and the OS's failures as one-sentence user errors.

rasterio raises a GDAL failure as an exception whose `__cause__` / `__context__` chain holds GDAL's own messages,
outermost first (`gdal_messages`). The OS's reason (errno) is in an `OSError`, in the "(os error N)" of a
Rust-backed writer's message, in the text GDAL appends ("… : No space left on device"), or, when a writer says
only "Write failed", in the state of the file system, looked at right after the failure (`write_failure`).
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mdseg.errors import MdsegError, OutputError

# What the user can do about each OS reason a write fails for.
_WRITE_FIXES = {
    errno.ENOSPC: "free some space in '{folder}' or write the outputs elsewhere",
    errno.EDQUOT: "free some of your quota or write the outputs elsewhere",
    errno.EROFS: "write the outputs to a folder on a writable file system",
    errno.EACCES: "write the outputs to a folder you may write to, or change its permissions",
    errno.EPERM: "write the outputs to a folder you may write to, or change its permissions",
    errno.EFBIG: "write the outputs to a file system that takes larger files",
    errno.EIO: "check the disk (or network share) and retry",
}
# Free space (bytes) under which a write that failed without saying why is taken to have run out of room: the
# failed writer's own partial file still holds what it managed to write.
_NEARLY_FULL = 16 * 2**20
# rasterio's wrapper messages, which say nothing themselves.
_GENERIC = re.compile(r"^(Read|Write) failed\. See previous exception for details\.$")


def io_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions a failed read or write of a file arrives as: `OSError` (rasterio's `RasterioIOError` is
    one) and GDAL's `CPLE_*` errors (only when rasterio is loaded: nothing else raises them)."""
    gdal = sys.modules.get("rasterio._err")
    return (OSError,) if gdal is None else (OSError, gdal.CPLE_BaseError)


def gdal_messages(exc: BaseException) -> list[str]:
    """The messages of `exc` and the exceptions chained under it, outermost first, without rasterio's empty
    "Read failed. See previous exception" wrappers."""
    messages, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(getattr(current, "errmsg", None) or current).strip()
        if text and not _GENERIC.match(text):
            messages.append(text)
        current = current.__cause__ or current.__context__
    return messages


def os_reason(exc: BaseException) -> int | None:
    """The errno behind `exc` when it says one: an OSError's own, a "(os error N)", or a known strerror text."""
    current: BaseException | None = exc
    seen = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.errno, int) and current.errno > 0:
            return current.errno
        current = current.__cause__ or current.__context__
    text = " ".join(gdal_messages(exc))
    found = re.search(r"os error (\d+)", text)
    if found:
        return int(found.group(1))
    lowered = text.lower()
    return next((n for n in _WRITE_FIXES if os.strerror(n).lower() in lowered), None)


def write_failure(target: str | Path, what: str, exc: BaseException, written: str | Path | None = None) -> str:
    """One sentence saying that `what` (e.g. "land-cover map") could not be written to `target`, why and what to
    do. The reason is the OS's when `exc` carries it, else read from the file system written to (`written`, the
    path actually written when not `target` itself) now: read-only, (nearly) full, or not writable by this user."""
    target = Path(target)
    # The folder written into: the path itself when it is one (a caller naming only the folder), else the
    # deepest existing folder above it.
    place = Path(written) if written is not None else target
    folder = next((p for p in (place, *place.parents) if p.is_dir()), Path("."))
    reason = os_reason(exc) or _file_system_reason(folder)
    if reason is None:
        messages = gdal_messages(exc)
        cause = messages[-1] if messages else type(exc).__name__
        fix = "check the folder and retry"
    else:
        cause = os.strerror(reason).lower()
        fix = _WRITE_FIXES.get(reason, "check the folder and retry").format(folder=folder)
    return f"Cannot write {what} '{target}': {cause}; {fix}."


@contextmanager
def writing(
    target: str | Path,
    what: str,
    also: tuple[type[BaseException], ...] = (),
    *,
    written: str | Path | None = None,
) -> Iterator[None]:
    """Turn a failed write inside the block (`io_error_types`, plus the writer-specific types in `also`) into an
    `OutputError` naming `what` and its `target` (the path the user asked for, not a temporary beside it;
    `written`: the path actually written, when it is not `target`)."""
    try:
        yield
    except MdsegError:
        raise
    except Exception as exc:
        if not isinstance(exc, (*io_error_types(), *also)):
            raise
        raise OutputError(write_failure(target, what, exc, written)) from None


def _file_system_reason(folder: Path) -> int | None:
    """Why writing into `folder` may have failed, from the file system's state: None when nothing is wrong."""
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if fs.f_bavail * fs.f_frsize < _NEARLY_FULL:
        return errno.ENOSPC
    if not os.access(folder, os.W_OK):
        return errno.EACCES
    return None
