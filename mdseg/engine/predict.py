"""Whole-scene inference: tile an optical + SAR pair, run a predictor, blend, and stream a land-cover COG.

The pieces: `mdseg.engine.options` (what to do and where to write), `mdseg.engine.tile_runner` (reading and
predicting tiles), `mdseg.geo.blend` (cosine-window blending), `mdseg.engine.sink` (bytes to COGs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
import torch

import mdseg
from mdseg.engine.options import PredictOptions, PredictOutputs, scene_inputs
from mdseg.engine.progress import ProgressCallback, progress_reporter
from mdseg.engine.sink import FRACTION_SCALE, MapSink
from mdseg.engine.tile_runner import Normaliser, Predictor, TileModel, TileRunner, tile_seed
from mdseg.geo.blend import BlendedBlock, TileBlender
from mdseg.geo.grid import Grid
from mdseg.geo.pair import RasterPair, grid_of
from mdseg.geo.stac import map_item
from mdseg.geo.style import categorised_qml
from mdseg.geo.tiles import tile_grid
from mdseg.geo.vector import polygonise, store_gpkg_style, vector_driver, write_polygons
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.failures import writing
from mdseg.io.paths import check_outputs
from mdseg.io.raster import open_raster

log = logging.getLogger(__name__)

# Smallest GDAL block cache of a run (bytes), whatever the scene: two full-width block rows of a typical pair
# (4 uint16 + 1 float32 bands in 512 px blocks) up to ~5400 px wide, so each block is decoded once there.
MIN_GDAL_CACHE = 64 * 2**20
# GDAL block cache (bytes) of the COG conversion at the end of a run.
COG_GDAL_CACHE = 16 * 2**20
# Block shape (rows, cols) of rasterio's WarpedVRT, through which a misaligned SAR raster is read.
WARPED_BLOCK = (128, 512)


@dataclass
class PredictionResult:
    """What a `predict_scene` run did: outputs, per-class pixels and areas, tiles and timing (seconds)."""

    output: str
    outputs: dict[str, str]
    classes: list[dict]
    tiles_total: int
    tiles_run: int
    tiles_skipped: int
    predictor_calls: int
    seconds: dict[str, float]
    alignment: dict
    sidecar: str
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def gdal_cache_bytes(pair: RasterPair, tile: int) -> int:
    """GDAL block cache (bytes) for reading `tile`-px tiles of `pair` in row-major order; independent of scene size.

    The larger of `MIN_GDAL_CACHE` and twice the input blocks (all bands of a file; and the warped view's
    blocks when SAR is reprojected) that one tile touches, so a block shared by neighbouring tiles is decoded
    once. Blocks shared with the next tile row stay cached only while two block rows, full width, fit: wider
    scenes decode them again (a 16384-px-wide deflate pair read 2.8× slower, bench/bench_predict.py); setting
    GDAL_CACHEMAX trades memory for that time. GDAL's default cache (5 % of RAM) fills with the scene's blocks.
    """
    with open_raster(pair.opt_path, "Optical") as opt, open_raster(pair.sar_path, "SAR") as sar:
        need = _blocks_bytes(opt, tile, tile)
        # SAR pixels per optical pixel along each axis; 1 when the CRSs differ (a rough size suffices here).
        sar_grid = grid_of(sar)
        sx, sy = (o / s for o, s in zip(pair.grid.res, sar_grid.res, strict=True))
        if sar_grid.crs != pair.grid.crs:
            sx = sy = 1.0
        need += _blocks_bytes(sar, tile * sy, tile * sx)
    if pair.reprojected:
        rows, cols = _span(tile, WARPED_BLOCK[0], pair.grid.height), _span(tile, WARPED_BLOCK[1], pair.grid.width)
        need += rows * cols * 4 * pair.sar_count
    return max(MIN_GDAL_CACHE, 2 * need)


def _sar_scale_cache_bytes(opt_path: str | Path, sar_path: str | Path) -> int:
    """GDAL block cache (bytes) for `RasterPair` opening: its SAR scale check reads a decimated view of the whole
    SAR raster row by row, which decodes each block once only if a block row, full width, stays cached (with
    room for one block row only, a 16384 × 2048 px SAR raster took 9 s instead of 0.6 s)."""
    # Both opened in RasterPair's order, so that a missing or broken file is reported as RasterPair would.
    with open_raster(opt_path, "Optical"), open_raster(sar_path, "SAR") as sar:
        return max(MIN_GDAL_CACHE, 2 * _blocks_bytes(sar, 1, sar.width))


def _caller_sets_gdal_cache() -> bool:
    """True when GDAL_CACHEMAX comes from the environment or an enclosing `rasterio.Env`."""
    return "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv())


def _blocks_bytes(src: rasterio.DatasetReader, rows: float, cols: float) -> int:
    """Bytes of the blocks (all bands) that a window `rows` × `cols` px of `src` can touch, wherever it lies."""
    bh, bw = src.block_shapes[0]
    px_bytes = sum(np.dtype(d).itemsize for d in src.dtypes)
    return _span(rows, bh, src.height) * _span(cols, bw, src.width) * px_bytes


def _span(length: float, block: int, limit: int) -> int:
    """Pixels in the blocks that a run of `length` px can straddle (at most 1 + ceil((length − 1) / block)),
    but no more than `limit`."""
    return min(limit, block * (1 + math.ceil((max(length, 1) - 1) / block)))


@contextmanager
def open_scene(
    opt_path: str | Path, sar_path: str | Path, model: TileModel, options: PredictOptions
) -> Iterator[tuple[RasterPair, bool]]:
    """Open a scene's pair as `model` reads it (band counts, `options.pair_options`), with GDAL's block cache
    bounded for the run (`gdal_cache_bytes`) unless the caller set GDAL_CACHEMAX. Yields the pair and whether
    the cache was bounded here."""
    with ExitStack() as stack:
        # GDAL's default block cache (5 % of RAM) would fill with the scene's blocks; a caller's setting is kept.
        bound_cache = not _caller_sets_gdal_cache()
        if bound_cache:
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=_sar_scale_cache_bytes(opt_path, sar_path)))
        pair = stack.enter_context(
            RasterPair(
                opt_path,
                sar_path,
                opt_band_count=model.opt_band_count,
                sar_band_count=model.sar_band_count,
                **options.pair_options(),
            )
        )
        alignment = pair.alignment()
        if alignment["sar_reprojected"]:
            log.info("SAR reprojected onto the optical grid (bilinear): %s", alignment["sar_grid"])
        log.info("%s", alignment["sar_scale"]["message"])
        if bound_cache:
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(pair, options.tile)))
        yield pair, bound_cache


class ScenePass:
    """One pass of a model over a scene: the tile grid of the pair's region (`options.tile`, `options.overlap`;
    `options` as run: see `fit_tile`), the `TileRunner` that predicts it and the `TileBlender` that blends it.
    `blocks` hands out the blended region block by block, row-major; what a map, a confusion matrix or anything
    else makes of them is the caller's."""

    def __init__(self, pair: RasterPair, model: TileModel, options: PredictOptions, device: str | torch.device):
        height, width = int(pair.window.height), int(pair.window.width)
        self.options = options = fit_tile(options, height, width)
        self.tiles = tile_grid(height, width, options.tile, options.overlap)
        self.runner = TileRunner(pair, model, options, device)
        self.blender = TileBlender(self.tiles, height, width, len(model.classes) + (options.samples > 1))

    def blocks(
        self, advance: Callable[[int], None] | None = None, timer: dict[str, float] | None = None
    ) -> Iterator[BlendedBlock]:
        """The blended blocks of the region (`BlendedBlock`: values, covered, region row and column); `advance(n)`
        as tiles finish; the runner adds its read and predict seconds to `timer` ("read", "predict") when given."""
        advance = advance or (lambda _: None)
        timer = timer if timer is not None else {"read": 0.0, "predict": 0.0}
        for batch_tiles, probs in self.runner.run(self.tiles, advance, timer):
            for t, (values, weight) in zip(batch_tiles, probs, strict=True):
                yield from self.blender.add(t, values, weight)
        yield from self.blender.finish()


# Tile sides fitted to a small scene are multiples of this (the backbone downsamples by 32).
TILE_MULTIPLE = 32


def fit_tile(options: PredictOptions, height: int, width: int) -> PredictOptions:
    """`options` for a region of `height` × `width` px: unchanged, or — when the region fits inside one tile —
    with the tile shrunk to the region's longer side rounded up to a multiple of `TILE_MULTIPLE` (the overlap to
    at most a quarter of it). A tile is mirrored up to its full size, so a 256² scene in a 544-px tile would
    cost 4.5× its pixels for nothing."""
    side = -(-max(height, width) // TILE_MULTIPLE) * TILE_MULTIPLE
    if side >= options.tile:
        return options
    return replace(options, tile=side, overlap=min(options.overlap, side // 4))


def predict_scene(
    opt_path: str | Path,
    sar_path: str | Path,
    outputs: PredictOutputs | str | Path,
    model: TileModel,
    options: PredictOptions | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool | ProgressCallback = True,
    run_info: Mapping[str, object] | None = None,
) -> PredictionResult:
    """Predict a land-cover map for a whole scene and write it as a Cloud-Optimized GeoTIFF on the optical grid.

    The SAR raster is read on the optical grid (reprojected when needed, see `RasterPair`); prediction runs on
    the footprints' intersection in `options.tile`-px tiles overlapping by at least `options.overlap` px,
    `batch_size` at a time; each tile's noise comes from `tile_seed(seed, row, col)`. Tile probabilities are
    blended with a cosine window (`TileBlender`) and streamed to disk band by band. Output (`outputs.map`, or a
    bare path): uint8 classes 0..K−1, 255 = nodata, colour table from `model.palette`, class names in band tags
    and `<out>.aux.xml`. Options left None take the module defaults (`PredictOptions.with_defaults`).

    Optional outputs (`PredictOutputs`): `prob` (K bands of probabilities), `confidence` (max probability, and
    with `samples` > 1 the predictor's disagreement) — bytes 0–254 with GDAL scale 1/254 (readers applying it get
    fractions 0–1), nodata 255 outside the region —, `vector` (.gpkg/.geojson polygons per class, simplified by
    `simplify_m` metres, dropping those under `min_area_m2` m²). A QGIS style `<stem>.qml` sits beside each
    raster and a GeoJSON (a GeoPackage holds its own). A JSON sidecar
    `<out stem>.json` records inputs, options, versions, timing, class areas and `run_info`. Every output
    appears only if the whole run succeeds; existing outputs are refused unless `outputs.overwrite`, and an output
    that is an input or another output (`mdseg.io.paths.check_outputs`) always is.
    `progress`: a Rich bar (True), nothing (False), or a callback `(tiles_done, tiles_total)`.

    Memory does not grow with the scene height: blending and writing hold a few full-width rows (see
    `TileBlender`, `StreamingCOG`), and GDAL's block cache is set to `gdal_cache_bytes` for the run (a
    process-wide setting, restored afterwards) unless the caller set GDAL_CACHEMAX (environment variable or an
    enclosing `rasterio.Env`).
    """
    o = (options or PredictOptions()).with_defaults()
    out = PredictOutputs.of(outputs)
    check_outputs(out.files(), scene_inputs(opt_path, sar_path))  # an input is never an output
    started = time.perf_counter()
    timer = {"read": 0.0, "predict": 0.0, "blend_write": 0.0}
    driver = vector_driver(out.vector) if out.vector is not None else None
    with AtomicOutputs(out.overwrite) as atomic, ExitStack() as open_files:
        tmp = {"map": atomic.reserve(out.map), "aux": atomic.reserve(out.aux)}
        targets = {"map": str(out.map)}
        for name, path in out.extras().items():
            tmp[name] = atomic.reserve(path)
            targets[name] = str(path)
        for name, path in out.styles().items():
            tmp[f"{name}_style"] = atomic.reserve(path)
            targets[f"{name}_style"] = str(path)
        tmp["sidecar"] = atomic.reserve(out.sidecar)
        tmp["stac"] = atomic.reserve(out.stac)
        targets["stac"] = str(out.stac)
        pair, bound_cache = open_files.enter_context(open_scene(opt_path, sar_path, model, o))
        scene = ScenePass(pair, model, o, device)
        sink = MapSink(
            pair.grid,
            pair.window,
            scene.tiles[0].height,
            model.classes,
            model.palette,
            o.samples,
            atomic,
            open_files,
            tmp,
            targets=targets,
            creation_options=o.creation_options(),
        )
        with progress_reporter(progress, len(scene.tiles)) as advance:
            t0 = time.perf_counter()
            for block in scene.blocks(advance, timer):
                sink.write(block)
            # the rest of the pass is blending and writing
            timer["blend_write"] = time.perf_counter() - t0 - timer["read"] - timer["predict"]
            t0 = time.perf_counter()
            # The COG conversion reads each intermediate block once: it needs a small cache, and lowering it drops
            # the input blocks still cached.
            with rasterio.Env(GDAL_CACHEMAX=COG_GDAL_CACHE) if bound_cache else nullcontext():
                sink.finish()
            timer["blend_write"] += time.perf_counter() - t0
        if out.vector is not None:
            t0 = time.perf_counter()
            geoms, ids, areas = polygonise(
                tmp["map"], model.classes, simplify_m=o.simplify_m, min_area_m2=o.min_area_m2
            )
            write_polygons(tmp["vector"], geoms, ids, areas, model.classes, pair.grid.crs, driver, target=out.vector)
            qml = categorised_qml(model.classes, model.palette)
            if driver == "GPKG":
                store_gpkg_style(tmp["vector"], qml, target=out.vector)
            else:
                with writing(out.styles()["vector"], "polygon style"):
                    tmp["vector_style"].write_text(qml)
            timer["vector"] = time.perf_counter() - t0
        timer["total"] = time.perf_counter() - started
        # The record holds the options as run: defaults filled in, bands as selected.
        record = {**scene.options.to_dict(), "opt_bands": pair.opt_bands, "sar_bands": pair.sar_bands}
        result = PredictionResult(
            output=str(out.map),
            outputs=targets,
            classes=sink.class_table(),
            tiles_total=len(scene.tiles),
            tiles_run=scene.runner.tiles_run,
            tiles_skipped=scene.runner.tiles_skipped,
            predictor_calls=scene.runner.calls,
            seconds={name: round(s, 3) for name, s in timer.items()},
            alignment=pair.alignment(),
            sidecar=str(out.sidecar),
            options={**record, "inference_scale": model.inference_scale},
        )
        sidecar = {
            "inputs": {"optical": str(opt_path), "sar": str(sar_path)},
            **result.to_dict(),
            "versions": _versions(),
            **dict(run_info or {}),
        }
        with writing(out.sidecar, "run record"):
            tmp["sidecar"].write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
        item = _stac_item(out, pair.grid, model, result, run_info or {})
        with writing(out.stac, "STAC item"):
            tmp["stac"].write_text(json.dumps(item, indent=2, default=str) + "\n")
    return result


def _stac_item(
    out: PredictOutputs, grid: Grid, model: TileModel, result: PredictionResult, run_info: Mapping[str, object]
) -> dict:
    """The map's STAC Item (`mdseg.geo.stac.map_item`) as JSON: the run's provenance (mdseg version, checkpoint
    SHA-256, options as run) in `mdseg:` properties, and every other output of the run as an asset."""
    checkpoint = run_info.get("checkpoint")
    sha256 = checkpoint.get("sha256") if isinstance(checkpoint, Mapping) else None
    properties = {
        "mdseg:version": mdseg.__version__,
        "mdseg:checkpoint_sha256": sha256,
        "mdseg:options": result.options,
    }
    styles = out.styles()
    assets = {
        **out.extras(),
        **{"style" if name == "map" else f"{name}_style": path for name, path in styles.items()},
        "class_table": out.aux,
        "record": out.sidecar,
    }
    fractions = {"probabilities": len(model.classes), "confidence": 1 + (result.options.get("samples", 1) > 1)}
    item = map_item(
        out.map,
        grid,
        model.classes,
        model.palette,
        result.classes,
        assets=assets,
        properties=properties,
        fractions=fractions,
        fraction_scale=FRACTION_SCALE,
    )
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def _versions() -> dict[str, str]:
    return {
        "mdseg": mdseg.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }


__all__ = [
    "Normaliser",
    "ScenePass",
    "PredictOptions",
    "PredictOutputs",
    "PredictionResult",
    "Predictor",
    "ProgressCallback",
    "TileModel",
    "fit_tile",
    "gdal_cache_bytes",
    "open_scene",
    "predict_scene",
    "progress_reporter",
    "tile_seed",
]
