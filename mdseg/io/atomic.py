"""All-or-nothing outputs: temporary files beside their targets, renamed into place only on success."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from types import TracebackType

from mdseg.errors import OutputError, OutputExistsError


def _plain_file_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _plain_file_mode()

# Files GDAL may leave beside a raster it wrote or read (PAM metadata, external masks and overviews).
_SIDECARS = (".aux.xml", ".msk", ".ovr")


class AtomicOutputs:
    """A set of output files committed together.

    `reserve(target)` checks the target (refusing an existing one unless `overwrite`), creates its folder when
    missing, and returns a hidden temporary path in that folder; `scratch(target)` returns a temporary path that
    is always removed. Leaving the `with` block normally renames every reserved temporary onto its target (and
    drops a stale GDAL sidecar of an overwritten raster); leaving it by any exception, KeyboardInterrupt
    included, removes every temporary and the folders it created, and leaves the targets as they were.
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._reserved: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []
        self._created: list[Path] = []  # output folders this block made

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            for path in [tmp for tmp, _ in self._reserved] + self._scratch:
                _remove_with_sidecars(path)
            if exc_type is not None:  # leave no trace: folders made for outputs that never came go too
                for folder in self._created:
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only if empty

    def check(self, target: str | Path) -> Path:
        """Raise now what `reserve` would raise for `target` (an existing file without overwrite, a folder that
        cannot be made), creating nothing: for refusing before a long run whose outputs come at its end."""
        target = Path(target)
        if target.exists() and not self.overwrite:
            raise OutputExistsError(
                f"Output '{target}' already exists; remove it, or pass --overwrite (overwrite=True in Python)."
            )
        existing = next(p for p in (target.parent, *target.parent.parents) if p.exists())
        if not existing.is_dir():
            raise OutputError(f"output folder '{target.parent}' cannot be made: '{existing}' is a file.")
        return target

    def reserve(self, target: str | Path) -> Path:
        """A temporary path for `target`, renamed onto it on success."""
        target = self.check(target)
        if any(t == target for _, t in self._reserved):
            raise OutputError(f"Output '{target}' was given twice; give each output its own path.")
        self._make_folder(target.parent)
        tmp = _temp_beside(target)
        self._reserved.append((tmp, target))
        return tmp

    def scratch(self, target: str | Path) -> Path:
        """A temporary path beside `target`, removed when the block ends, whatever happens."""
        tmp = _temp_beside(Path(target), tag="scratch")
        self._scratch.append(tmp)
        return tmp

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
            for ext in _SIDECARS:
                stale = target.with_name(target.name + ext)
                if stale not in targets:
                    with contextlib.suppress(FileNotFoundError):
                        stale.unlink()
        self._reserved.clear()


def _temp_beside(target: Path, tag: str = "partial") -> Path:
    # Same folder (rename stays atomic, same file system); hidden; keeps the extension so drivers recognise it.
    return target.with_name(f".{target.stem}.{tag}-{secrets.token_hex(4)}{target.suffix}")


def _remove_with_sidecars(path: Path) -> None:
    for p in (path, *(path.with_name(path.name + ext) for ext in _SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
