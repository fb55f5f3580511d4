"""Dataset names: what mdseg takes as an input raster is any name GDAL opens, kept as typed.

A name is a local path (`scene/opt.tif`, `file:///data/opt.tif`), a GDAL virtual file system path (`/vsizip/…`,
`/vsicurl/…`, `/vsis3/…`, `/vsimem/…`) or a URL rasterio turns into one (`https://…`, `s3://…`, `gs://…`,
`az://…`, `zip:///data/a.zip!/opt.tif`). Only a local path is a file on this machine: its existence, its sidecars
and its identity with an output mean something; the others are checked by opening them. Names are never put
through `pathlib.Path`, which would turn `https://host/x.tif` into `https:/host/x.tif`.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

# `scheme://…`; a scheme of two letters or more (a Windows drive `C:/` is a path). One slash is enough: a name
# already put through Path ('https:/host/x.tif') is still a URL.
_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.\-]+):/", re.IGNORECASE)
# GDAL's virtual file systems that read an archive; what follows them may be a local file.
_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")
_ARCHIVE_SCHEMES = ("zip", "tar", "gzip")


def local_path(name: str | Path) -> Path | None:
    """The file on this machine that dataset name `name` is (itself for a path; the path of a `file://` URL),
    else None (a `/vsi…` path or another URL: GDAL reads it, there is no file here to look at)."""
    if isinstance(name, Path):
        name = str(name)
    found = _URL.match(name)
    if found:
        if found["scheme"].lower() != "file":
            return None
        return Path(unquote(urlparse(name).path))
    if name.startswith("/vsi"):
        return None
    return Path(name)


def is_local(name: str | Path) -> bool:
    """Whether `name` is a file on this machine (see `local_path`)."""
    return local_path(name) is not None


def local_archive(name: str | Path) -> Path | None:
    """The local archive a dataset name reads a member of (`/vsizip//data/a.zip/x.tif`, `zip:///data/a.zip!/x.tif`
    → `/data/a.zip`), else None. An archive that is itself remote (`/vsizip/vsicurl/…`) is not local."""
    name = str(name)
    found = _URL.match(name)
    if found:
        if found["scheme"].lower() not in _ARCHIVE_SCHEMES or "!" not in name:
            return None
        return Path(unquote(urlparse(name.split("!", 1)[0]).path))
    for prefix in _ARCHIVES:
        if name.startswith(prefix):
            inside = name[len(prefix) :]
            if inside.startswith("vsi"):
                return None
            # GDAL splits at the archive file itself: the longest leading part that is a file. A name put through
            # Path lost the second slash of '/vsizip//abs/a.zip': the absolute reading is tried after the relative.
            for start in (Path(inside), Path("/", inside)):
                for candidate in (start, *start.parents):
                    if candidate.is_file():
                        return candidate
            return None
    return None


def dataset_stem(name: str | Path) -> str:
    """The stem of the file a dataset name ends in: `https://host/a/T32_opt.tif?sig=…` → `T32_opt`,
    `/vsizip//data/a.zip/T32_opt.tif` → `T32_opt`, `zip:///data/a.zip!/b.tif` → `b`."""
    name = str(name)
    # A URL's query (a signed URL's '?X-Amz-…') and an archive's '!' are not part of the file name.
    path = urlparse(name.replace("!", "/", 1)).path if _URL.match(name) else name.split("?", 1)[0]
    stem = PurePosixPath(unquote(path.rstrip("/"))).stem
    return stem or "input"
