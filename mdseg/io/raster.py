"""Opening rasters and reading their bands with validity: the one place that decides which pixels are valid.

The rules, for every reader in mdseg (`read_bands`, `read_classes` and what is built on them):

- a value is valid when it is finite and its band's GDAL mask keeps it: the file's nodata value, an internal
  (per-dataset) mask or an alpha band; each band by its own mask;
- a band's mask is read only when its mask flags are not `all_valid`;
- a nodata override (`nodata=`, e.g. predict's `--opt-nodata`) replaces the declared nodata value: values equal
  to it are invalid and the declared value is ignored, while an internal mask or alpha band still applies;
- masks are always resampled by nearest neighbour, so a decimated read never invents valid pixels.

A file that cannot be opened or read (missing, empty, unreadable, not a raster, truncated, a damaged block) is an
`InputFileError` naming the file by the role it was opened as (`open_raster(path, "Optical")`) and GDAL's cause,
whichever reader met it and whenever: a block that fails in the middle of a scene too.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import rasterio.io
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from mdseg.errors import ClassValueError, InputFileError
from mdseg.io.failures import gdal_messages, io_error_types
from mdseg.io.names import local_path

# Side (pixels) of the blocks streaming passes read at a time: 1024² px × 15 bands × 4 B ≈ 60 MiB at most.
CHUNK = 1024
# Longest side (pixels) of the decimated read `sample_values` takes; GDAL serves it from overviews when the file
# has them.
SAMPLE_SIDE = 512

# Any dataset rasterio reads from: an opened file or a warped view of one.
Readable = rasterio.io.DatasetReaderBase

# The role each dataset was opened as by `open_raster` ("Optical", "SAR", "Label", …), for read errors' messages.
_ROLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# GDAL's words for a block it could not read: "<file>, band 2: IReadBlock failed at X offset 3, Y offset 1: …".
_BLOCK_FAILED = re.compile(
    r"^(?P<file>.*), band (?P<band>\d+): IReadBlock failed at X offset (?P<x>\d+), Y offset (?P<y>\d+)"
)
# libtiff's own position in a message ("… at row 512, col 0, tile 7", "… at scanline 256"): GDAL's block
# position, given in full-resolution pixels, replaces it.
_LIBTIFF_POSITION = re.compile(r" at (row|scanline|strip|tile) \d+(, (col|tile) \d+)*")
# The magic numbers of a (Big)TIFF: such a file that GDAL cannot open is a broken TIFF, not another format.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def open_raster(path: str | Path, role: str) -> rasterio.DatasetReader:
    """Open the dataset `path` for reading as the `role` raster ("Optical", "SAR", "Label", …), turning every
    failure into a one-sentence `InputFileError`. Later read failures of the dataset (`read_errors`) name it by
    `role` too.

    `path` is any name GDAL opens (see `mdseg.io.names`), used as typed: a local file (missing, a folder, empty,
    permission denied, not a raster, a TIFF GDAL cannot parse: each said so), a `/vsi…` path or a URL (`https://`,
    `s3://`, `gs://`, `az://`, `zip://…!/…`), which is checked by opening it and refused with GDAL's reason.
    Credentials and network options come from the environment, as GDAL reads them (AWS_*, GS_*, AZURE_*,
    GDAL_HTTP_*)."""
    local = local_path(path)
    if local is not None and not local.exists():
        raise InputFileError(f"{role} raster '{local}' does not exist; check the path.")
    try:
        # Georeferencing is judged where it matters (a pair, a grid check) in one sentence, not as a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except io_error_types() as exc:
        if local is None:
            raise InputFileError(_remote_failure(str(path), role, exc)) from None
        raise InputFileError(_open_failure(local, role, exc)) from None
    _ROLES[src] = role
    return src


@contextmanager
def read_errors(src: Readable, window: Window | None = None, *, decimated: bool = False) -> Iterator[None]:
    """Turn a failed read of `src` inside the block into an `InputFileError` naming the file (a warped view's
    source file), its role, the failing block and GDAL's cause. `window`: what was read, said when GDAL does not
    name the block; `decimated`: the read was resampled (GDAL's block position may then be an overview's)."""
    try:
        yield
    except io_error_types() as exc:
        raise InputFileError(_read_failure(src, exc, window, decimated)) from None


def chunk_windows(height: int, width: int, size: int = CHUNK) -> Iterator[Window]:
    """Windows of at most `size`² pixels covering a height × width raster, row by row."""
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def read_bands(
    src: Readable,
    bands: Sequence[int],
    window: Window | None = None,
    *,
    out_shape: tuple[int, int] | None = None,
    resampling: Resampling = Resampling.nearest,
    nodata: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """1-based `bands` of `window` (None: the whole raster) as float32 (C, h, w) and their validity (C, h, w)
    bool, by the rules in the module docstring.

    `out_shape` (h, w) reads decimated (or enlarged) with `resampling` for the values; GDAL then serves the read
    from overviews when it can. `nodata` overrides the file's declared nodata value. NaN as the override makes
    validity plain finiteness, which suits a warped view that fills what it lacks with NaN (and spares a second
    warp to compute its mask). Values at invalid pixels are unspecified.
    """
    bands = list(bands)
    shape = None if out_shape is None else (len(bands), *out_shape)
    with read_errors(src, window, decimated=out_shape is not None):
        data = src.read(bands, window=window, out_shape=shape, resampling=resampling, out_dtype="float32")
        valid = np.isfinite(data)
        if nodata is not None:
            valid &= data != np.float32(nodata)
        _apply_masks(src, bands, valid, window, out_shape, overridden=nodata is not None)
    return data, valid


def read_classes(
    src: Readable, window: Window | None = None, *, out_shape: tuple[int, int] | None = None, role: str = "class"
) -> tuple[np.ndarray, np.ndarray]:
    """Band 1 of a class raster in `window` as int64 class values (h, w) and its validity (h, w) bool, by the
    rules in the module docstring; `out_shape` (h, w) reads it by nearest neighbour (classes are never averaged).

    Read in the file's own data type, so large integer values stay exact. Values at invalid pixels are 0 for a
    floating-point file and unspecified otherwise. Raises `ClassValueError` (with `role`, e.g. "label") when a
    valid pixel holds a non-integer value.
    """
    with read_errors(src, window, decimated=out_shape is not None):
        data = src.read(1, window=window, out_shape=out_shape, resampling=Resampling.nearest)
        valid = np.ones((1, *data.shape), dtype=bool)
        _apply_masks(src, [1], valid, window, out_shape, overridden=False)
    valid = valid[0]
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
        fractional = valid & (data != np.round(data))
        if fractional.any():
            raise ClassValueError(
                f"The {role} raster '{src.name}' holds non-integer values (e.g. {data[fractional][0]}); "
                "a class raster holds whole class indices.",
                role,
            )
        data = np.where(valid, data, 0)
    return data.astype(np.int64, copy=False), valid


def distinct_values(path: str | Path, role: str, size: int = CHUNK) -> set[int]:
    """The distinct valid values of band 1 of the raster at `path` (as integers), streamed `size`² px at a time."""
    values: set[int] = set()
    with open_raster(path, role) as src:
        for window in chunk_windows(src.height, src.width, size):
            block, ok = read_bands(src, [1], window)
            values.update(int(v) for v in np.unique(block[ok]))
    return values


def sample_values(
    src: Readable, bands: Sequence[int], side: int = SAMPLE_SIDE, *, nodata: float | None = None
) -> np.ndarray:
    """The valid values (1-D float32) of `bands` read whole by nearest neighbour, decimated so the longest side
    is at most `side` px: a cheap sample of a scene's values (e.g. to decide its SAR scale)."""
    step = max(1.0, max(src.width, src.height) / side)
    shape = (max(1, round(src.height / step)), max(1, round(src.width / step)))
    values, valid = read_bands(src, bands, out_shape=shape, nodata=nodata)
    return values[valid]


def _apply_masks(
    src: Readable,
    bands: list[int],
    valid: np.ndarray,
    window: Window | None,
    out_shape: tuple[int, int] | None,
    *,
    overridden: bool,
) -> None:
    """AND GDAL's mask of each band that has one into `valid` (C, h, w), in place. With the nodata value
    `overridden`, only internal masks and alpha bands count (a mask made from the declared nodata would
    bring back the value the override replaces)."""
    if overridden:
        needs = [k for k, b in enumerate(bands) if {MaskFlags.per_dataset, MaskFlags.alpha} & set(_flags(src, b))]
    else:
        needs = [k for k, b in enumerate(bands) if MaskFlags.all_valid not in _flags(src, b)]
    if not needs:
        return
    masked = [bands[k] for k in needs]
    shape = None if out_shape is None else (len(masked), *out_shape)
    masks = src.read_masks(masked, window=window, out_shape=shape, resampling=Resampling.nearest)
    valid[needs] &= masks > 0


def _flags(src: Readable, band: int) -> list[MaskFlags]:
    return src.mask_flag_enums[band - 1]


def _open_failure(path: Path, role: str, exc: BaseException) -> str:
    """Why `path` could not be opened, with what to do, from the file itself first and GDAL's words after."""
    if path.is_dir():
        return f"{role} raster '{path}' is a folder, not a file; pass the raster file inside it."
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except PermissionError:
        return f"{role} raster '{path}' cannot be read: permission denied; ask for read access or copy it elsewhere."
    except OSError as err:
        return f"{role} raster '{path}' cannot be read: {(err.strerror or str(err)).lower()}; check the file and retry."
    cause = (gdal_messages(exc) or [type(exc).__name__])[-1]
    if not head:
        return f"{role} raster '{path}' is empty (0 bytes); re-download or re-export it."
    if head in _TIFF_MAGIC:
        return (
            f"{role} raster '{path}' is a TIFF GDAL cannot open ({cause}): the file is truncated or damaged; "
            "re-download or re-export it."
        )
    return f"{role} file '{path}' is not a raster GDAL can read ({cause}); pass a GeoTIFF, COG or VRT."


def _remote_failure(name: str, role: str, exc: BaseException) -> str:
    """Why the dataset `name` (not a local file) could not be opened: GDAL's innermost reason, on one line."""
    messages = gdal_messages(exc)
    cause = " ".join((messages[-1] if messages else type(exc).__name__).split()).rstrip(".")
    return (
        f"{role} raster '{name}' cannot be opened: {cause}; check the name, the network and the credentials "
        "(GDAL reads them from the environment: AWS_*, GS_*, AZURE_*, GDAL_HTTP_*)."
    )


def _read_failure(src: Readable, exc: BaseException, window: Window | None, decimated: bool) -> str:
    """One sentence for a failed read of `src`: role, file, where (GDAL's block, else the window read), cause."""
    base = getattr(src, "src_dataset", src)  # a warped view fails on its source file's blocks
    role = _ROLES.get(base, "Input")
    messages = gdal_messages(exc)
    where = ""
    for text in messages:
        found = _BLOCK_FAILED.match(text)
        # GDAL names the file as it was given or by its base name alone; a warped view's own blocks do not count.
        if found and Path(found["file"]).name == Path(base.name).name and not decimated:
            bh, bw = base.block_shapes[int(found["band"]) - 1]
            where = f" at block (row {int(found['y']) * bh}, col {int(found['x']) * bw}) of band {found['band']}"
            break
    else:
        if window is not None and not decimated and src is base:
            where = f" in rows {int(window.row_off)}–{int(window.row_off + window.height) - 1}, cols "
            where += f"{int(window.col_off)}–{int(window.col_off + window.width) - 1}"
    # The innermost message is GDAL's (or libtiff's) own reason: "ZIPDecode:Decoding error", "Read error; got …".
    cause = _LIBTIFF_POSITION.sub("", messages[-1]) if messages else type(exc).__name__
    return (
        f"{role} raster '{base.name}' cannot be read{where}: {cause.rstrip('.')} — the file is truncated or damaged; "
        "re-download or re-export it."
    )
