"""Opening rasters and reading their bands with validity: the one place that decides which pixels are valid."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from mdseg.errors import InputFileError

# Side (pixels) of the blocks streaming passes read at a time: 1024² px × 15 bands × 4 B ≈ 60 MiB at most.
CHUNK = 1024


def open_raster(path: str | Path, role: str) -> rasterio.DatasetReader:
    """Open `path` for reading, turning "missing" and "not a raster" into one-sentence `InputFileError`s."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{role} raster '{path}' does not exist; check the path.")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputFileError(
            f"{role} file '{path}' is not a raster GDAL can read ({exc}); pass a GeoTIFF, COG or VRT."
        ) from None


def chunk_windows(height: int, width: int, size: int = CHUNK) -> Iterator[Window]:
    """Windows of at most `size`² pixels covering a height × width raster, row by row."""
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def read_bands(src: rasterio.DatasetReader, bands: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Bands (C, h, w) float32 of `window` and their validity (C, h, w) bool: finite and not masked by the file's
    nodata value, internal mask or alpha band."""
    data = src.read(list(bands), window=window, out_dtype="float32")
    valid = np.isfinite(data)
    if any(MaskFlags.all_valid not in src.mask_flag_enums[b - 1] for b in bands):
        valid &= src.read_masks(list(bands), window=window) > 0
    return data, valid


