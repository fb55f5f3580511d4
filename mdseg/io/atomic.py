"""All-or-nothing outputs: temporary files beside their targets, renamed into place only on success; one run at a
time per target; what a killed run left behind is cleared by the next run in that folder.

Temporaries are hidden, keep the target's extension (so GDAL drivers recognise them) and name the process that made
them: `.<stem>.mdseg-<host>-<pid>-<start>-<hex>.partial<suffix>` (`.scratch<suffix>` for scratch files), where
`<start>` is the process's start time (clock ticks since boot, 0 where unknown) so that a later process reusing the
pid is not taken for the one that died. A target is locked for the whole block by an advisory lock
(`flock`) on the hidden file `.<name>.mdseg-lock` beside it, holding the owner's host and pid for the message a
second run gets; the lock file is removed when the block ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from mdseg.errors import OutputError, OutputExistsError
from mdseg.io.paths import SIDECARS, same_file


def _plain_file_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _plain_file_mode()
LOCK_SUFFIX = ".mdseg-lock"
_HOST = socket.gethostname()
# The host in a temporary's name: letters, digits and _ only, so the name parses back unambiguously.
_HOST_TAG = re.sub(r"[^A-Za-z0-9]+", "_", _HOST)[:64] or "host"
_TEMP = re.compile(
    r"^\..*\.mdseg-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-(?P<start>\d+)-(?P<hex>[0-9a-f]{8})\.(?:partial|scratch)"
)
_STOP_SIGNALS = {s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None}
# The tokens (`<hex>`) of the temporaries this process's open blocks own: the only ones of this process that a
# sweep must keep.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


class AtomicOutputs:
    """A set of output files committed together.

    `reserve(target)` checks the target (refusing an existing one unless `overwrite`), creates its folder when
    missing, clears what dead mdseg runs of this host left in that folder, locks the target against other runs
    (`OutputError` naming the run that holds it) and returns a hidden temporary path in that folder;
    `scratch(target)` returns a temporary path that is always removed. Leaving the `with` block normally renames
    every reserved temporary onto its target (and drops a stale GDAL sidecar of an overwritten raster); leaving it
    by any exception, KeyboardInterrupt and `mdseg.errors.Interrupted` included, removes every temporary and the
    folders it created, and leaves the targets as they were. Stop signals wait while the block ends, so a
    commit or clean-up is never cut short; either way the locks are released and their files removed.
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._reserved: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []
        self._created: list[Path] = []  # output folders this block made
        self._locks: list[_TargetLock] = []
        self._tokens: list[str] = []
        self._swept: set[Path] = set()

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with _signals_held():
            temporaries = [tmp for tmp, _ in self._reserved] + self._scratch
            try:
                if exc_type is None:
                    self._commit()
            finally:
                for path in temporaries:  # after a commit: sidecars GDAL left beside a renamed temporary
                    _remove_with_sidecars(path)
                for lock in self._locks:
                    lock.release()
                self._locks.clear()
                with _LIVE_LOCK:
                    _LIVE.difference_update(self._tokens)
                if exc_type is not None:  # leave no trace: folders made for outputs that never came go too
                    for folder in self._created:
                        with contextlib.suppress(OSError):
                            folder.rmdir()  # only if empty

    def check(self, target: str | Path) -> Path:
        """Raise now what `reserve` would raise for `target` (an existing file without overwrite, a folder that
        cannot be made), creating nothing: for refusing before a long run whose outputs come at its end. (A target
        another run is writing is refused by `reserve` only: looking at its lock could disturb that run's.)"""
        return self._check(target)

    def reserve(self, target: str | Path) -> Path:
        """A temporary path for `target`, renamed onto it on success."""
        target = self._check(target)
        if any(same_file(t, target) for _, t in self._reserved):
            raise OutputError(f"Output '{target}' was given twice; give each output its own path.")
        self._make_folder(target.parent)
        self._sweep(target.parent)
        self._locks.append(_TargetLock.acquire(target))
        self._check(target)  # again: another run may have finished it while this one waited for the lock
        tmp = self._temp_beside(target, "partial")
        self._reserved.append((tmp, target))
        return tmp

    def scratch(self, target: str | Path) -> Path:
        """A temporary path beside `target`, removed when the block ends, whatever happens."""
        tmp = self._temp_beside(Path(target), "scratch")
        self._scratch.append(tmp)
        return tmp

    def _check(self, target: str | Path) -> Path:
        target = Path(target)
        if target.exists() and not self.overwrite:
            raise OutputExistsError(
                f"Output '{target}' already exists; remove it, or pass --overwrite (overwrite=True in Python)."
            )
        existing = next(p for p in (target.parent, *target.parent.parents) if p.exists())
        if not existing.is_dir():
            raise OutputError(f"output folder '{target.parent}' cannot be made: '{existing}' is a file.")
        return target

    def _temp_beside(self, target: str | Path, tag: str) -> Path:
        # Same folder (rename stays atomic, same file system); hidden; keeps the extension so drivers recognise it.
        target = Path(target)
        token = secrets.token_hex(4)
        with _LIVE_LOCK:
            _LIVE.add(token)
        self._tokens.append(token)
        host, pid, start = _me()
        return target.with_name(f".{target.stem}.mdseg-{host}-{pid}-{start}-{token}.{tag}{target.suffix}")

    def _sweep(self, folder: Path) -> None:
        """Once per folder and block: remove the temporaries (and their sidecars) of dead mdseg runs of this host,
        and lock files nobody holds."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        sweep_folder(folder)

    def _make_folder(self, folder: Path) -> None:
        """Create a missing output folder (and parents), remembering which, so a failure can remove them."""
        missing = []
        for parent in (folder, *folder.parents):
            if parent.exists():
                break
            missing.append(parent)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder '{folder}' ({exc.strerror or exc}).") from None
        if not folder.is_dir():
            raise OutputError(f"output folder '{folder}' is not a folder; choose another path.")
        self._created.extend(missing)  # deepest first: removed in this order

    def _commit(self) -> None:
        targets = {t for _, t in self._reserved}
        for tmp, target in self._reserved:
            # writers that go through their own temporary file (safetensors) leave it 0600; give outputs the
            # permissions a plain file would get under the user's umask, as for every other output
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, target)
            for ext in SIDECARS:
                stale = target.with_name(target.name + ext)
                if stale not in targets:
                    with contextlib.suppress(FileNotFoundError):
                        stale.unlink()
        self._reserved.clear()


def sweep_folder(folder: str | Path) -> list[Path]:
    """Remove from `folder` the temporaries (any file named after one: its GDAL sidecars, a GeoPackage's journal)
    that mdseg processes of this host left when they died, and lock files nobody holds; return what went.

    A temporary is kept while its process lives (pid alive and, where the start time is known, started when the
    temporary's name says), and always when it names another host: this one cannot tell whether that run lives.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if name.endswith(LOCK_SUFFIX):
            if _remove_unheld_lock(path):
                removed.append(path)
            continue
        found = _TEMP.match(name)
        if found is None or found["host"] != _HOST_TAG:
            continue
        if _owner_alive(int(found["pid"]), int(found["start"]), found["hex"]):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


class _TargetLock:
    """An exclusive `flock` on `.<name>.mdseg-lock` beside a target, its file removed on release."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, target: Path) -> _TargetLock:
        """Lock `target`, or `OutputError` naming the run that holds it. The file at the lock path may be removed
        by its holder (on release) or by a sweep between our open and our lock: then the lock we got is on a file
        nobody else will see, so we open the path again."""
        path = lock_path(target)
        for _ in range(1000):  # each turn means another run released the lock in between; a few at most
            fd = _open_lock(path, create=True)
            if not _flock_soon(fd):
                holder = _holder(fd)
                os.close(fd)
                raise OutputError(
                    f"output '{target}' is being written by another mdseg run ({holder}); wait for it to end, "
                    "or choose another path."
                ) from None
            if _names(path, fd):
                with contextlib.suppress(OSError):  # a lock file we may not write (another user's) still locks
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{_HOST} {os.getpid()}\n".encode())
                return cls(path, fd)
            os.close(fd)
        raise OutputError(f"cannot lock output '{target}': its lock file '{path}' keeps changing; try again.")

    def release(self) -> None:
        """Remove the lock file, then unlock: a run that opened it meanwhile finds it gone and opens a new one."""
        try:
            if _names(self.path, self.fd):
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            os.close(self.fd)


def lock_path(target: str | Path) -> Path:
    """The lock file of `target`: hidden, beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}{LOCK_SUFFIX}")


def _open_lock(path: Path, create: bool) -> int:
    flags = os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, os.O_RDWR | flags, 0o666)
    except PermissionError:  # another user's lock file: reading is enough to lock it
        try:
            return os.open(path, os.O_RDONLY | flags)
        except OSError as exc:
            raise OutputError(f"cannot lock output: '{path}' cannot be opened ({exc.strerror or exc}).") from None
    except OSError as exc:
        if not create and isinstance(exc, FileNotFoundError):
            raise
        raise OutputError(f"cannot lock output: '{path}' cannot be made ({exc.strerror or exc}).") from None


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(fd: int) -> str:
    """'pid P on host H' from a lock file's contents (the holder writes them just after locking)."""
    try:
        host, pid = os.pread(fd, 512, 0).decode().split()
    except (OSError, UnicodeDecodeError, ValueError):
        return "its pid is not known yet"
    return f"pid {pid} on host {host}"


def _remove_unheld_lock(path: Path) -> bool:
    """Remove a lock file nobody holds (its run was killed) unless it names another host; True when removed."""
    try:
        fd = _open_lock(path, create=False)
    except (FileNotFoundError, OutputError):
        return False
    try:
        # Only a lock of a dead run of this host is tried: locking a live run's file, even for an instant, could
        # make a run starting at that instant think it taken.
        host, pid = (os.pread(fd, 512, 0).decode(errors="replace").split() + ["", ""])[:2]
        if host not in (_HOST, "") or (pid.isdigit() and _pid_alive(int(pid))):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _names(path, fd):
            return False
        path.unlink()
        return True
    except (BlockingIOError, FileNotFoundError):
        return False
    finally:
        os.close(fd)


def _flock_soon(fd: int) -> bool:
    """Lock `fd` exclusively, trying a few times over about half a second: a sweep of another run may hold a dead
    run's lock file for an instant; a live run holds it for its whole block. False when still held."""
    for attempt in range(7):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < 6:
                time.sleep(0.01 * 2**attempt)
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    return _start_ticks(pid) != -1


def _me() -> tuple[str, int, int]:
    """This process as a temporary's name gives it: host tag, pid, start time (ticks since boot; 0 unknown)."""
    pid = os.getpid()
    return _HOST_TAG, pid, _start_ticks(pid) or 0


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux); None when not known; -1 for a zombie (dead,
    not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (command)": the command may hold spaces
    return -1 if fields[0] == "Z" else int(fields[19])


def _owner_alive(pid: int, start: int, token: str) -> bool:
    """Whether the process that named a temporary (`pid`, `start`) may still be using it."""
    if pid == os.getpid() and start == _me()[2]:
        with _LIVE_LOCK:
            return token in _LIVE  # this process: only its open blocks' temporaries are in use
    if not _pid_alive(pid):
        return False
    now = _start_ticks(pid)
    return not (start and now is not None and now != start)  # a live pid started at another time is reused


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP (main thread only, where Python handles them) until the block ends; one
    that came meanwhile is handled just after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _remove_with_sidecars(path: Path) -> None:
    # `.ovr.tmp`: the overviews GDAL's COG driver builds beside its output before writing it
    for p in (path, *(path.with_name(path.name + ext) for ext in (*SIDECARS, ".ovr.tmp"))):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
