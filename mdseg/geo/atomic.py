"""All-or-nothing outputs: temporary files beside their targets, renamed into place only on success."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from types import TracebackType

from mdseg.errors import OutputError, OutputExistsError

# Files GDAL may leave beside a raster it wrote or read (PAM metadata, external masks and overviews).
_SIDECARS = (".aux.xml", ".msk", ".ovr")


class AtomicOutputs:
    """A set of output files committed together.

    `reserve(target)` checks the target (refusing an existing one unless `overwrite`) and returns a hidden
    temporary path in the target's folder; `scratch(target)` returns a temporary path that is always removed.
    Leaving the `with` block normally renames every reserved temporary onto its target (and drops a stale
    GDAL sidecar of an overwritten raster); leaving it by any exception, KeyboardInterrupt included, removes
    every temporary and leaves the targets as they were.
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._reserved: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []

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

    def reserve(self, target: str | Path) -> Path:
        """A temporary path for `target`, renamed onto it on success."""
        target = Path(target)
        if not target.parent.is_dir():
            raise OutputError(f"Output folder '{target.parent}' does not exist; create it or choose another path.")
        if target.exists() and not self.overwrite:
            raise OutputExistsError(
                f"Output '{target}' already exists; remove it, or pass --overwrite (overwrite=True in Python)."
            )
        if any(t == target for _, t in self._reserved):
            raise OutputError(f"Output '{target}' was given twice; give each output its own path.")
        tmp = _temp_beside(target)
        self._reserved.append((tmp, target))
        return tmp

    def scratch(self, target: str | Path) -> Path:
        """A temporary path beside `target`, removed when the block ends, whatever happens."""
        tmp = _temp_beside(Path(target), tag="scratch")
        self._scratch.append(tmp)
        return tmp

    def _commit(self) -> None:
        targets = {t for _, t in self._reserved}
        for tmp, target in self._reserved:
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
