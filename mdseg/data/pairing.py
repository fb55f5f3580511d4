"""Pair the files of parallel folders (optical / SAR / label) by sample name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from mdseg.errors import DatasetLayoutError

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".png", ".jp2"})
_SHOWN = 5  # names listed per folder in a mismatch error


def stem_key(folder: Path, path: Path) -> str:
    """Sample name of `path`: its file name without the extension (same names in every folder)."""
    return path.stem


def prefix_key(folder: Path, path: Path) -> str:
    """Sample name of `path` without a leading "<folder name>_" (Hunan: s2/s2_2604.tif → 2604)."""
    prefix = folder.name + "_"
    return path.stem[len(prefix) :] if path.stem.startswith(prefix) else path.stem


def raster_files(folder: Path) -> list[Path]:
    """Raster files directly in `folder` (by extension, any case), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


def pair_files(
    folders: Mapping[str, Path], key: Callable[[Path, Path], str] = stem_key
) -> list[tuple[str, dict[str, Path]]]:
    """[(name, {role: path})] for the names present in every folder of `folders` ({role: folder}), sorted.

    Raises `DatasetLayoutError` listing, per folder, the names the others have and it lacks, and when the folders
    hold no rasters at all.
    """
    found: dict[str, dict[str, Path]] = {}
    for role, folder in folders.items():
        entries: dict[str, Path] = {}
        for path in raster_files(folder):
            entries.setdefault(key(folder, path), path)  # first by sorted name wins (a.tif before a.tiff)
        found[role] = entries
    every = set().union(*(set(e) for e in found.values()))
    if not every:
        listed = ", ".join(f"'{f}'" for f in folders.values())
        raise DatasetLayoutError(f"no raster files (.tif, .tiff, …) in {listed}; check the dataset folder.")
    problems = []
    for role, entries in found.items():
        missing = sorted(every - set(entries))
        if missing:
            shown = ", ".join(missing[:_SHOWN]) + (
                f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
            )
            problems.append(f"'{folders[role]}' lacks {len(missing)}: {shown}")
    if problems:
        raise DatasetLayoutError(
            "the dataset folders hold different file sets (" + "; ".join(problems) + "); every sample needs a file of "
            "the same name in each folder."
        )
    return [(name, {role: found[role][name] for role in folders}) for name in sorted(every)]
