"""Small GeoTIFF datasets written to tmp_path for the tests of `mdseg.data`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def write_tif(path: Path, array: np.ndarray, nodata: float | None = None) -> Path:
    """Write a (C, H, W) or (H, W) array as a georeferenced GeoTIFF (UTM 33N, 10 m pixels)."""
    data = array[None] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype,
        "crs": "EPSG:32633",
        "transform": Affine(10, 0, 500000, 0, -10, 4000000),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def write_pair_folders(
    root: Path,
    folders: tuple[str, str, str],
    names: list[str],
    size: tuple[int, int] = (8, 8),
    bands: tuple[int, int] = (4, 1),
    labels: np.ndarray | None = None,
    seed: int = 0,
    prefixes: bool = False,
) -> None:
    """One optical, SAR and label file per name in `root/<opt>/`, `root/<sar>/`, `root/<label>/`.

    Optical is uint16, SAR float32 dB, labels uint8 (`labels`, else 0..7 at random); with `prefixes` files are
    named "<folder>_<name>.tif" (the Hunan convention).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    for name in names:
        arrays = (
            rng.integers(0, 1000, (bands[0], h, w)).astype(np.uint16),
            rng.uniform(-25, 0, (bands[1], h, w)).astype(np.float32),
            labels if labels is not None else rng.integers(0, 8, (h, w)).astype(np.uint8),
        )
        for folder, array in zip(folders, arrays, strict=True):
            file = f"{folder}_{name}.tif" if prefixes else f"{name}.tif"
            write_tif(root / folder / file, array)
