"""Synthetic scenes as georeferenced GeoTIFFs: one scene, or a train / val dataset in the generic layout.

Every pixel value comes from `numpy.random.default_rng` seeded by the scene's seed, and GDAL writes no
timestamp, so the same seed, size and library versions give byte-identical files. A single scene of seed S
draws from `SeedSequence(S)`; scene i of a dataset of seed S from `SeedSequence(S, spawn_key=(i,))`, so a
dataset never repeats a single scene (the shipped sample uses seed 7).

Files: `<name>_opt.tif` (4 bands red, green, blue, nir; uint8; nodata 0), `<name>_sar.tif` (1 band VV, σ0 in
dB to 0.01; float32; nodata NaN), `<name>_label.tif` (class indices 0–6 of WHU-OPT-SAR's classes; uint8;
nodata 255; colour table and class names). All on one grid: UTM zone 50N (EPSG:32650), 5 m pixels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from mdseg.data.catalog import WHU_CLASSES, WHU_PALETTE
from mdseg.data.layout import CLASSES_FILE
from mdseg.errors import OptionError, OutputError
from mdseg.geo.writer import class_colormap, class_tags
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.paths import check_outputs
from mdseg.synth.landscape import build_landscape
from mdseg.synth.render import UNLABELLED, SceneArrays, render

logger = logging.getLogger(__name__)

CRS_EPSG = 32650  # UTM zone 50N: central China, where WHU-OPT-SAR was taken
PIXEL_M = 5.0
MIN_SIZE, MAX_SIZE = 64, 8192
OPT_BANDS = ("red", "green", "blue", "nir")
_BLOCK = 256


@dataclass(frozen=True)
class Scene:
    """A generated scene in memory: its arrays (see `SceneArrays`) and their grid."""

    arrays: SceneArrays
    crs: CRS
    transform: Affine


@dataclass(frozen=True)
class SceneFiles:
    """The three files of a written scene."""

    opt: Path
    sar: Path
    label: Path


@dataclass(frozen=True)
class SyntheticDataset:
    """A written dataset: its root folder and the sample names of each split."""

    root: Path
    train: tuple[str, ...]
    val: tuple[str, ...]


def generate_scene(seed: int, size: int = 1024, index: int | None = None) -> Scene:
    """Draw a scene of `size` × `size` pixels (5 m) from `seed` (and, for dataset scenes, their `index`)."""
    _check_size(size)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=() if index is None else (index,)))
    land = build_landscape(rng, size)
    arrays = render(land, rng)
    # A plausible origin near Wuhan, moved by whole pixels per scene.
    x0 = 200_000 + PIXEL_M * int(rng.integers(0, 20_000))
    y0 = 3_300_000 + PIXEL_M * int(rng.integers(0, 20_000))
    return Scene(arrays, CRS.from_epsg(CRS_EPSG), Affine(PIXEL_M, 0, x0, 0, -PIXEL_M, y0))


def synthesize_scene(
    out_dir: str | Path, *, seed: int = 0, size: int = 1024, name: str | None = None, overwrite: bool = False
) -> SceneFiles:
    """Write one scene as `<name>_opt.tif`, `<name>_sar.tif`, `<name>_label.tif` in `out_dir` (created if
    missing); `name` defaults to `synth_<seed>`. All three files appear together or none do; existing files are
    refused (`OutputExistsError`) unless `overwrite`."""
    out_dir = _make_dir(Path(out_dir))
    name = name or f"synth_{seed}"
    files = SceneFiles(*(out_dir / f"{name}_{role}.tif" for role in ("opt", "sar", "label")))
    check_outputs(_roles(files))
    with AtomicOutputs(overwrite) as outputs:
        tmp = SceneFiles(*(outputs.reserve(p) for p in (files.opt, files.sar, files.label)))
        write_scene(generate_scene(seed, size), tmp)
    return files


def synthesize_dataset(
    out_dir: str | Path,
    *,
    scenes: int,
    seed: int = 0,
    size: int = 1024,
    val: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SyntheticDataset:
    """Write `scenes` scenes as a dataset in mdseg's generic layout: `train/` and `val/`, each with `opt/`, `sar/`,
    `label/` holding `synth_<seed>_<i>.tif` (i zero-padded), and `classes.json` (WHU-OPT-SAR's classes and colours,
    label value k = class k, 255 ignored) at the root.

    `val`: scenes in the validation split, the last ones (default a fifth, at least 1 when scenes ≥ 2).
    `progress(i)` is called after scene i is generated. The files are committed together at the end.
    """
    if scenes < 1:
        raise OptionError(f"scenes must be at least 1, got {scenes}.")
    if val is None:
        val = max(1, round(scenes / 5)) if scenes >= 2 else 0
        logger.info("synthetic dataset: %d of %d scenes go to val (a fifth by default)", val, scenes)
    if not 0 <= val < scenes:
        raise OptionError(f"val must be between 0 and scenes - 1 ({scenes - 1}), got {val}.")
    _check_size(size)
    root = _make_dir(Path(out_dir))
    names = [f"synth_{seed}_{i:0{max(4, len(str(scenes - 1)))}d}" for i in range(scenes)]
    splits = ["train"] * (scenes - val) + ["val"] * val
    targets = [
        SceneFiles(*(root / split / role / f"{name}.tif" for role in ("opt", "sar", "label")))
        for name, split in zip(names, splits, strict=True)
    ]
    # Folders symlinked onto each other would put two files in one place: refuse before writing any.
    check_outputs({"classes.json": root / CLASSES_FILE} | {k: v for t in targets for k, v in _roles(t).items()})
    with AtomicOutputs(overwrite) as outputs:
        classes = outputs.reserve(root / CLASSES_FILE)
        classes.write_text(json.dumps(_classes_json(), indent=2) + "\n")
        for i, target in enumerate(targets):
            for path in (target.opt, target.sar, target.label):
                _make_dir(path.parent)
            files = SceneFiles(*(outputs.reserve(p) for p in (target.opt, target.sar, target.label)))
            write_scene(generate_scene(seed, size, index=i), files)
            logger.debug("synthetic scene %d of %d generated: %s", i + 1, scenes, target.opt.name)
            if progress is not None:
                progress(i)
    return SyntheticDataset(
        root=root,
        train=tuple(n for n, s in zip(names, splits, strict=True) if s == "train"),
        val=tuple(n for n, s in zip(names, splits, strict=True) if s == "val"),
    )


def write_scene(scene: Scene, files: SceneFiles) -> None:
    """Write a scene's three GeoTIFFs: tiled, DEFLATE with a predictor (2 for integers, 3 for floats)."""
    a = scene.arrays
    height, width = a.label.shape
    block = min(_BLOCK, -(-max(height, width) // 16) * 16)
    common = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "crs": scene.crs,
        "transform": scene.transform,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
    }
    # alpha=UNSPECIFIED: GDAL would call the 4th band of an RGB uint8 file alpha, and NIR would mask pixels
    rgb_nir = {"photometric": "RGB", "alpha": "UNSPECIFIED"}
    with rasterio.open(files.opt, "w", count=4, dtype="uint8", nodata=0, predictor=2, **rgb_nir, **common) as dst:
        dst.write(a.opt)
        dst.descriptions = OPT_BANDS
        dst.update_tags(SOURCE="mdseg synth", UNITS="digital number")
    with rasterio.open(files.sar, "w", count=1, dtype="float32", nodata=np.nan, predictor=3, **common) as dst:
        dst.write(a.sar, 1)
        dst.set_band_description(1, "VV")
        dst.update_tags(SOURCE="mdseg synth")
        dst.update_tags(1, UNITS="dB", POLARISATION="VV", LOOKS="4")
    with rasterio.open(files.label, "w", count=1, dtype="uint8", nodata=UNLABELLED, predictor=2, **common) as dst:
        dst.write(a.label, 1)
        dst.write_colormap(1, class_colormap(WHU_PALETTE))
        dst.set_band_description(1, "class")
        dst.update_tags(SOURCE="mdseg synth")
        dst.update_tags(1, **class_tags(WHU_CLASSES))


def _classes_json() -> dict:
    """The `classes.json` of a synthetic dataset (the format `mdseg.data.classes.load_classes_json` reads)."""
    return {
        "names": list(WHU_CLASSES),
        "palette": [list(c) for c in WHU_PALETTE],
        "label_map": {str(k): k for k in range(len(WHU_CLASSES))},
        "ignore": UNLABELLED,
    }


def _roles(files: SceneFiles) -> dict[str, Path]:
    """A scene's files by the role an error message gives them."""
    return {
        f"the optical raster of {files.opt.stem}": files.opt,
        f"the SAR raster of {files.sar.stem}": files.sar,
        f"the label raster of {files.label.stem}": files.label,
    }


def _check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise OptionError(f"scene size must be {MIN_SIZE}–{MAX_SIZE} pixels, got {size}.")


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder '{path}' ({exc.strerror}); choose another path.") from None
    return path
