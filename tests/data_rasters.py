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


def write_blob_dataset(root: Path, scenes: dict[str, int], size: int = 96, seed: int = 0) -> Path:
    """A learnable generic-layout dataset: `scenes` maps split → scene count; each scene is smooth blobs of
    2 classes (0 = "land": bright optical, SAR −8 dB; 1 = "water": dark optical, SAR −20 dB) plus noise, and
    `classes.json` at the root. Returns `root`."""
    import json

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count in scenes.items():
        for k in range(count):
            field = np.zeros((size, size))
            for _ in range(4):
                cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 8, size / 4)]
                field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            water = field > 0.5
            opt = np.where(water, 300.0, 1200.0)[None] * rng.uniform(0.9, 1.1, (4, 1, 1))
            opt = (opt + rng.normal(0, 60, (4, size, size))).clip(0, 4000).astype(np.uint16)
            sar = (np.where(water, -20.0, -8.0) + rng.normal(0, 1.5, (size, size))).astype(np.float32)
            name = f"{split}{k}"
            write_tif(root / split / "opt" / f"{name}.tif", opt)
            write_tif(root / split / "sar" / f"{name}.tif", sar)
            write_tif(root / split / "label" / f"{name}.tif", water.astype(np.uint8))
    classes = {"names": ["land", "water"], "palette": [[200, 160, 80], [0, 0, 255]]}
    (root / "classes.json").write_text(json.dumps(classes))
    return root
