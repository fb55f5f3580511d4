"""Which files a run reads and which it writes, compared by identity: an input is never an output, and no two
outputs are one file. Every command checks its outputs here before it starts work.

Two paths are the same file when both name one existing file (same device and inode: a symlink or a hard link to
an input is that input), or when neither exists and they resolve to the same path (symlinked folders followed).
GDAL reads and writes sidecars beside a raster (`<name>.aux.xml`: metadata and statistics, `<name>.msk`: the
nodata mask, `<name>.ovr`: overviews), and `AtomicOutputs` deletes stale ones beside every file it replaces, so a
path brings its sidecars with it: an output may not be an input, another output, or a sidecar of either (writing
`opt.tif.msk` would change what the input `opt.tif` reads as). The map `m.tif` and its `m.tif.aux.xml` are one
output, the map. Paths that differ only in letter case on a case-insensitive file system are told apart only once
they exist. Inputs are dataset names (`mdseg.io.names`): only local files can be outputs too; a URL or a `/vsi…`
name is none, and a member of a local archive (`/vsizip//data/a.zip/x.tif`) is that archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mdseg.errors import OutputError
from mdseg.io.names import local_archive, local_path

# Files GDAL may read, write or leave beside a raster (PAM metadata, external masks and overviews).
SIDECARS = (".aux.xml", ".msk", ".ovr")

Named = Mapping[str, "str | Path | None"]  # role ("the map", "the optical input") → path; None: not asked for


def sidecars(path: str | Path) -> tuple[Path, ...]:
    """The GDAL sidecars of `path` (they may not exist)."""
    path = Path(path)
    return tuple(path.with_name(path.name + ext) for ext in SIDECARS)


def file_key(path: str | Path) -> tuple:
    """What makes `path` one file: (device, inode) when it exists, else its resolved absolute path."""
    try:
        st = os.stat(path)
    except OSError:  # missing (or unreachable): a file yet to be made, known by where it will be
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether `a` and `b` name one file (see `file_key`)."""
    return file_key(a) == file_key(b)


@dataclass(frozen=True)
class _Claim:
    """One file a role reads or writes: the path given, or one of its GDAL sidecars."""

    role: str
    path: Path
    file: Path

    def __str__(self) -> str:
        if self.file == self.path:
            return f"{self.role} '{self.path}'"
        return f"the GDAL sidecar '{self.file}' of {self.role} '{self.path}'"


def _claims(role: str, path: str | Path) -> Iterator[tuple[tuple, _Claim]]:
    local = local_path(path)
    if local is None:
        # A URL or a /vsi… name is no file here; a member of a local archive claims the archive (GDAL keeps no
        # sidecars beside an archive: it cannot write into one).
        archive = local_archive(path)
        if archive is not None:
            yield file_key(archive), _Claim(role, archive, archive)
        return
    for file in (local, *sidecars(local)):
        yield file_key(file), _Claim(role, local, file)


class InputFiles:
    """The files a run reads, with their sidecars, indexed once (a batch checks every scene's outputs against all
    of its inputs)."""

    def __init__(self, inputs: Named) -> None:
        self._by_key: dict[tuple, _Claim] = {}
        for role, path in inputs.items():
            if path is not None:
                for key, claim in _claims(role, path):
                    self._by_key.setdefault(key, claim)

    def find(self, key: tuple) -> _Claim | None:
        return self._by_key.get(key)


def check_outputs(outputs: Named, inputs: Named | InputFiles | None = None) -> None:
    """Refuse outputs that are inputs or each other: `OutputError` naming both when an output (or a GDAL sidecar
    of it) is the same file as an input (or an input's sidecar) or as another output (or its sidecar). `--overwrite`
    does not matter: an input is never replaced. Creates nothing; call it before any work."""
    known = inputs if isinstance(inputs, InputFiles) else InputFiles(inputs or {})
    written: dict[tuple, _Claim] = {}
    for role, path in outputs.items():
        if path is None:
            continue
        mine = dict(_claims(role, path))
        for key, claim in mine.items():
            read = known.find(key)
            if read is not None:
                raise OutputError(
                    f"{claim} and {read} are the same file; an input is never overwritten (not even with "
                    "--overwrite): choose another output path."
                )
            other = written.get(key)
            if other is not None:
                raise OutputError(f"{claim} and {other} are the same file; give each output its own path.")
        for key, claim in mine.items():
            written.setdefault(key, claim)


def check_apart(output: str | Path, output_role: str, folder: str | Path, folder_role: str) -> None:
    """`OutputError` when `output` (a file or folder to write) is the input folder `folder`, lies inside it, or
    holds it: what a run writes never lands among the files it reads, nor they among its own."""
    out_chain = _chain(output)
    in_chain = _chain(folder)
    if out_chain[0] in in_chain or in_chain[0] in out_chain:
        raise OutputError(
            f"{output_role} '{output}' and {folder_role} '{folder}' overlap (one is, or lies inside, the other); "
            f"put {output_role} outside {folder_role}."
        )


def _chain(path: str | Path) -> list[tuple]:
    """The keys of `path` and of every folder above it, nearest first."""
    resolved = Path(os.path.realpath(path))
    return [file_key(p) for p in (resolved, *resolved.parents)]
