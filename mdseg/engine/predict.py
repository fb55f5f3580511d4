"""Whole-scene inference: tile an optical + SAR pair, run a predictor, blend, and stream a land-cover COG."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import mdseg
from mdseg.data.normalise import Normalisation
from mdseg.errors import OptionError
from mdseg.geo.blend import BlendedBlock, TileBlender
from mdseg.geo.grid import Grid, pixel_areas_m2
from mdseg.geo.pair import Align, RasterPair, grid_of
from mdseg.geo.sar import SarScale
from mdseg.geo.tiles import Tile, tile_grid, weight_window
from mdseg.geo.vector import polygonise, vector_driver, write_polygons
from mdseg.geo.writer import CLASS_NODATA, StreamingCOG, class_aux_xml, class_colormap, class_tags
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.raster import open_raster

ProgressCallback = Callable[[int, int], None]

# Smallest GDAL block cache of a run (bytes), whatever the scene: two full-width block rows of a typical pair
# (4 uint16 + 1 float32 bands in 512 px blocks) up to ~5400 px wide, so each block is decoded once there.
MIN_GDAL_CACHE = 64 * 2**20
# GDAL block cache (bytes) of the COG conversion at the end of a run.
COG_GDAL_CACHE = 16 * 2**20
# Block shape (rows, cols) of rasterio's WarpedVRT, through which a misaligned SAR raster is read.
WARPED_BLOCK = (128, 512)


class Predictor(Protocol):
    """What `predict_scene` runs on each batch of tiles.

    Called as `predictor(opt, sar, generators, steps, samples)` with optical (B, Co, h, w) and SAR
    (B, Cs, h, w) float32 tensors (normalised; nodata pixels 0), one seeded `torch.Generator` per tile, the
    number of sampling steps and of samples. Returns class probabilities (B, K, h, w), or a pair
    (probabilities, disagreement (B, h, w) in [0, 1]) when it measures the spread between samples.
    """

    def __call__(
        self, opt: torch.Tensor, sar: torch.Tensor, generators: list[torch.Generator], steps: int, samples: int
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


Normaliser = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


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


def tile_seed(seed: int, row: int, col: int) -> int:
    """A 63-bit generator seed for the tile at (row, col) of a run seeded with `seed`.

    Mixed with numpy's SeedSequence so neighbouring tiles and seeds get unrelated streams; depends on nothing
    else (not batch size, not tile order).
    """
    state = np.random.SeedSequence([seed, row, col]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


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


def predict_scene(
    opt_path: str | Path,
    sar_path: str | Path,
    out_path: str | Path,
    predictor: Predictor,
    *,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    opt_bands: Sequence[int] | None = None,
    sar_bands: Sequence[int] | None = None,
    opt_band_count: int | None = None,
    sar_band_count: int | None = None,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    steps: int = 3,
    samples: int = 1,
    normalise: Normalisation | Normaliser | None = None,
    inference_scale: float = 1.0,
    sar_scale: SarScale = "auto",
    align: Align = "reproject",
    opt_nodata: float | None = None,
    sar_nodata: float | None = None,
    prob_path: str | Path | None = None,
    confidence_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    simplify_m: float = 0.0,
    min_area_m2: float = 0.0,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    progress: bool | ProgressCallback = True,
    run_info: Mapping[str, object] | None = None,
) -> PredictionResult:
    """Predict a land-cover map for a whole scene and write it as a Cloud-Optimized GeoTIFF on the optical grid.

    The SAR raster is read on the optical grid (reprojected when needed, see `RasterPair`); prediction runs on
    the footprints' intersection in `tile`-px tiles overlapping by at least `overlap` px, `batch_size` at a
    time; each tile's noise comes from `tile_seed(seed, row, col)`. Tile probabilities are blended with a
    cosine window (`TileBlender`) and streamed to disk band by band. Output: uint8 classes 0..K−1, 255 = nodata,
    colour table from `palette` ((r, g, b) 0–255 per class), class names in band tags and `<out>.aux.xml`.

    Optional outputs: `prob_path` (K bands, probability × 255), `confidence_path` (max probability × 255, and
    with `samples` > 1 the predictor's disagreement × 255), `vector_path` (.gpkg/.geojson polygons per class,
    simplified by `simplify_m` metres, dropping those under `min_area_m2` m²). A JSON sidecar `<out stem>.json`
    records inputs, options, versions, timing, class areas and `run_info`. Every output appears only if the
    whole run succeeds; existing outputs are refused unless `overwrite`.

    `normalise` maps read optical (Co, h, w) / SAR (Cs, h, w, in dB) to model units; `inference_scale`
    resamples each tile (bilinear) before the predictor and the probabilities back after it. `progress`:
    a Rich bar (True), nothing (False), or a callback `(tiles_done, tiles_total)`.

    Memory does not grow with the scene height: blending and writing hold a few full-width rows (see
    `TileBlender`, `StreamingCOG`), and GDAL's block cache is set to `gdal_cache_bytes` for the run (a
    process-wide setting, restored afterwards) unless the caller set GDAL_CACHEMAX (environment variable or an
    enclosing `rasterio.Env`).
    """
    k = len(classes)
    _check_options(k, palette, tile, overlap, batch_size, steps, samples, inference_scale)
    started = time.perf_counter()
    timer = {"read": 0.0, "predict": 0.0, "blend_write": 0.0}
    out_path = Path(out_path)
    sidecar_path = out_path.with_suffix(".json")
    driver = vector_driver(vector_path) if vector_path is not None else None
    with AtomicOutputs(overwrite) as outputs, ExitStack() as open_files:
        tmp = {"map": outputs.reserve(out_path), "aux": outputs.reserve(out_path.with_name(out_path.name + ".aux.xml"))}
        targets = {"map": str(out_path)}
        for name, path in (("probabilities", prob_path), ("confidence", confidence_path), ("vector", vector_path)):
            if path is not None:
                tmp[name] = outputs.reserve(path)
                targets[name] = str(path)
        tmp["sidecar"] = outputs.reserve(sidecar_path)
        # GDAL's default block cache (5 % of RAM) would fill with the scene's blocks; a caller's setting is kept.
        bound_cache = not _caller_sets_gdal_cache()
        if bound_cache:
            open_files.enter_context(rasterio.Env(GDAL_CACHEMAX=_sar_scale_cache_bytes(opt_path, sar_path)))
        pair = open_files.enter_context(
            RasterPair(
                opt_path,
                sar_path,
                opt_bands=opt_bands,
                sar_bands=sar_bands,
                opt_band_count=opt_band_count,
                sar_band_count=sar_band_count,
                align=align,
                sar_scale=sar_scale,
                opt_nodata=opt_nodata,
                sar_nodata=sar_nodata,
            )
        )
        if bound_cache:
            open_files.enter_context(rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(pair, tile)))
        tiles = tile_grid(pair.window.height, pair.window.width, tile, overlap)
        sink = _Sink(pair.grid, pair.window, tiles[0].height, classes, palette, samples, outputs, open_files, tmp)
        runner = _TileRunner(pair, predictor, normalise, tile, overlap, seed, steps, samples, inference_scale, device)
        blender = TileBlender(tiles, pair.window.height, pair.window.width, k + (samples > 1))
        with progress_reporter(progress, len(tiles)) as advance:
            for batch_tiles, probs in runner.run(tiles, batch_size, advance, timer):
                t0 = time.perf_counter()
                for t, (values, weight) in zip(batch_tiles, probs, strict=True):
                    for block in blender.add(t, values, weight):
                        sink.write(block)
                timer["blend_write"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for block in blender.finish():
                sink.write(block)
            # The COG conversion reads each intermediate block once: it needs a small cache, and lowering it drops
            # the input blocks still cached.
            with rasterio.Env(GDAL_CACHEMAX=COG_GDAL_CACHE) if bound_cache else nullcontext():
                sink.finish()
            timer["blend_write"] += time.perf_counter() - t0
        if vector_path is not None:
            t0 = time.perf_counter()
            geoms, ids, areas = polygonise(tmp["map"], classes, simplify_m=simplify_m, min_area_m2=min_area_m2)
            write_polygons(tmp["vector"], geoms, ids, areas, classes, pair.grid.crs, driver)
            timer["vector"] = time.perf_counter() - t0
        timer["total"] = time.perf_counter() - started
        result = PredictionResult(
            output=str(out_path),
            outputs=targets,
            classes=sink.class_table(),
            tiles_total=len(tiles),
            tiles_run=runner.tiles_run,
            tiles_skipped=runner.tiles_skipped,
            predictor_calls=runner.calls,
            seconds={name: round(s, 3) for name, s in timer.items()},
            alignment=pair.alignment(),
            sidecar=str(sidecar_path),
            options={
                "opt_bands": pair.opt_bands,
                "sar_bands": pair.sar_bands,
                "tile": tile,
                "overlap": overlap,
                "batch_size": batch_size,
                "seed": seed,
                "steps": steps,
                "samples": samples,
                "inference_scale": inference_scale,
                "align": align,
                "opt_nodata": opt_nodata,
                "sar_nodata": sar_nodata,
                "simplify_m": simplify_m,
                "min_area_m2": min_area_m2,
            },
        )
        sidecar = {
            "inputs": {"optical": str(opt_path), "sar": str(sar_path)},
            **result.to_dict(),
            "versions": _versions(),
            **dict(run_info or {}),
        }
        tmp["sidecar"].write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    return result


class _TileRunner:
    """Reads tiles, skips all-nodata ones, batches the rest through the predictor, yields weighted probabilities."""

    def __init__(
        self,
        pair: RasterPair,
        predictor: Predictor,
        normalise: Normalisation | Normaliser | None,
        tile: int,
        overlap: int,
        seed: int,
        steps: int,
        samples: int,
        inference_scale: float,
        device: str | torch.device,
    ) -> None:
        self.pair, self.predictor, self.normalise = pair, predictor, normalise
        self.tile, self.overlap, self.seed, self.steps, self.samples = tile, overlap, seed, steps, samples
        self.scale, self.device = inference_scale, torch.device(device)
        self.tiles_run = self.tiles_skipped = self.calls = 0

    def run(
        self, tiles: list[Tile], batch_size: int, advance: Callable[[int], None], timer: dict[str, float]
    ) -> Iterator[tuple[list[Tile], list[tuple[np.ndarray, np.ndarray]]]]:
        """Yield (tiles, [(values (C, h, w), weight (h, w))]) per predictor batch, tiles in row-major order.

        C is K class probabilities, plus the predictor's disagreement as channel K when `samples` > 1.
        """
        batch: list[tuple[Tile, np.ndarray, np.ndarray, np.ndarray]] = []
        for i, t in enumerate(tiles):
            t0 = time.perf_counter()
            item = self._read(t)
            timer["read"] += time.perf_counter() - t0
            if item is None:
                self.tiles_skipped += 1
                advance(1)
            else:
                batch.append(item)
            if batch and (len(batch) == batch_size or i == len(tiles) - 1):
                t0 = time.perf_counter()
                out = self._predict(batch)
                timer["predict"] += time.perf_counter() - t0
                yield [b[0] for b in batch], out
                self.tiles_run += len(batch)
                advance(len(batch))
                batch = []

    def _read(self, t: Tile) -> tuple[Tile, np.ndarray, np.ndarray, np.ndarray] | None:
        w = self.pair.window
        window = rasterio.windows.Window(w.col_off + t.x, w.row_off + t.y, t.width, t.height)
        opt, sar, valid = self.pair.read(window)
        if not valid.any():
            return None
        if self.normalise is not None:
            opt, sar = self.normalise(opt, sar)
        # Nodata pixels enter the model as 0 (the mean after normalisation); their output is discarded anyway.
        opt = np.where(valid, opt, 0).astype(np.float32, copy=False)
        sar = np.where(valid, sar, 0).astype(np.float32, copy=False)
        pad = ((0, 0), (0, self.tile - t.height), (0, self.tile - t.width))
        if t.height < self.tile or t.width < self.tile:
            # Only scenes smaller than a tile get here: mirror them up to the size the model expects.
            opt, sar = np.pad(opt, pad, mode="reflect"), np.pad(sar, pad, mode="reflect")
        return t, opt, sar, valid

    def _predict(
        self, batch: list[tuple[Tile, np.ndarray, np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        opt = torch.from_numpy(np.stack([b[1] for b in batch])).to(self.device)
        sar = torch.from_numpy(np.stack([b[2] for b in batch])).to(self.device)
        size = opt.shape[-2:]
        if self.scale != 1.0:
            scaled = (round(size[0] * self.scale), round(size[1] * self.scale))
            opt = F.interpolate(opt, size=scaled, mode="bilinear", align_corners=False)
            sar = F.interpolate(sar, size=scaled, mode="bilinear", align_corners=False)
        gens = [
            torch.Generator(device=self.device).manual_seed(tile_seed(self.seed, b[0].row, b[0].col)) for b in batch
        ]
        with torch.inference_mode():
            out = self.predictor(opt, sar, gens, self.steps, self.samples)
        self.calls += 1
        probs, spread = out if isinstance(out, tuple) else (out, None)
        if self.samples > 1 and spread is None:
            raise ValueError("the predictor returned no disagreement map although samples > 1")
        probs = probs.float()
        if probs.ndim != 4 or probs.shape[0] != len(batch):
            raise ValueError(f"the predictor returned shape {tuple(probs.shape)}; expected (B={len(batch)}, K, h, w)")
        # The disagreement rides along as channel K only when it is written: a zero channel would add blending
        # work and full-width accumulator rows for nothing.
        values = torch.cat([probs, spread.float().unsqueeze(1)], dim=1) if self.samples > 1 else probs
        if values.shape[-2:] != size:
            values = F.interpolate(values, size=size, mode="bilinear", align_corners=False)
        values = values.cpu().numpy()
        result = []
        for (t, _, _, valid), v in zip(batch, values, strict=True):
            weight = weight_window(t, self.overlap) * valid
            result.append((v[:, : t.height, : t.width], weight))
        return result


class _Sink:
    """Turns blended blocks into output bytes, gathers them into full-width row bands, streams those to disk.

    A band is the rows one tile row finishes (at most a tile high); its blocks arrive left to right, and the
    band goes to the writers when its last block is in. Only uint8 bands are full width, so the sink's memory is
    (output bands) × tile height × scene width bytes (plus a validity band when a masked raster is written).
    """

    def __init__(
        self,
        grid: Grid,
        window: rasterio.windows.Window,
        band_rows: int,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        samples: int,
        outputs: AtomicOutputs,
        open_files: ExitStack,
        tmp: dict[str, Path],
    ) -> None:
        self.grid, self.window, self.classes, self.palette, self.tmp = grid, window, classes, palette, tmp
        self.k = len(classes)
        self.row0, self.col0 = int(window.row_off), int(window.col_off)
        self.pixels = np.zeros(256, dtype=np.int64)
        self.area_m2 = np.zeros(256, dtype=np.float64)
        self.writers: dict[str, StreamingCOG] = {}
        self.bands: dict[str, np.ndarray] = {}
        self.band_rows = band_rows
        # Only the masked rasters (probabilities, confidence) need validity; columns outside the region keep
        # their fill (nodata, or 0 and unmasked) in every band.
        masked = "probabilities" in tmp or "confidence" in tmp
        self.valid = np.zeros((band_rows if masked else 0, grid.width), dtype=bool)

        def open_writer(name: str, count: int, fill: int, **kwargs: object) -> None:
            writer = StreamingCOG(outputs.scratch(tmp[name]), grid, count, **kwargs)
            open_files.callback(writer.close)
            self.writers[name] = writer
            self.bands[name] = np.full((count, band_rows, grid.width), fill, dtype=np.uint8)

        open_writer(
            "map",
            1,
            CLASS_NODATA,
            nodata=CLASS_NODATA,
            colormap=class_colormap(palette),
            descriptions=["land cover class"],
            tags={"MDSEG_VERSION": mdseg.__version__},
            band_tags={1: class_tags(classes)},
        )
        if "probabilities" in tmp:
            kwargs = {"masked": True, "descriptions": list(classes), "overview_resampling": "average"}
            open_writer("probabilities", self.k, 0, **kwargs)
        if "confidence" in tmp:
            names = ["max probability"] + (["sample disagreement"] if samples > 1 else [])
            open_writer("confidence", len(names), 0, masked=True, descriptions=names, overview_resampling="average")

    def write(self, block: BlendedBlock) -> None:
        """Put a blended block into its band; write the band (after any all-nodata rows above it) once complete."""
        n, m = block.covered.shape
        cols = slice(self.col0 + block.col, self.col0 + block.col + m)
        probs = block.values[: self.k]
        cls = np.where(block.covered, probs.argmax(axis=0), CLASS_NODATA).astype(np.uint8)
        self._count(cls, self.row0 + block.row)
        self.bands["map"][0, :n, cols] = cls
        if self.valid.size:
            self.valid[:n, cols] = block.covered
        if "probabilities" in self.bands:
            self.bands["probabilities"][:, :n, cols] = _to_byte(probs)
        if "confidence" in self.bands:
            self.bands["confidence"][0, :n, cols] = _to_byte(probs.max(axis=0))
            if self.writers["confidence"].count > 1:
                self.bands["confidence"][1, :n, cols] = _to_byte(block.values[self.k])
        if block.col + m == int(self.window.width):
            self._fill_to(self.row0 + block.row)
            for name, writer in self.writers.items():
                writer.write(self.bands[name][:, :n], self.valid[:n] if writer.masked else None)

    def finish(self) -> None:
        """Fill rows below the region with nodata and convert every raster to a COG; write the map's RAT."""
        self._fill_to(self.grid.height)
        # The conversion should not stack on top of the row bands.
        self.bands.clear()
        self.valid = np.zeros((0, self.grid.width), dtype=bool)
        for name, writer in self.writers.items():
            writer.finish(self.tmp[name])
        self.tmp["aux"].write_text(class_aux_xml(self.classes, self.palette))

    def class_table(self) -> list[dict]:
        """Per class: id, name, pixels, area (km²), percent of classified pixels."""
        total = int(self.pixels[: self.k].sum())
        return [
            {
                "class_id": i,
                "name": name,
                "pixels": int(self.pixels[i]),
                "area_km2": round(float(self.area_m2[i]) / 1e6, 6),
                "percent": round(100.0 * int(self.pixels[i]) / total, 4) if total else 0.0,
            }
            for i, name in enumerate(self.classes)
        ]

    def _count(self, cls: np.ndarray, row0: int) -> None:
        areas = pixel_areas_m2(self.grid, row0, cls.shape[0])
        self.pixels += np.bincount(cls.ravel(), minlength=256)
        self.area_m2 += np.bincount(cls.ravel(), weights=np.repeat(areas, cls.shape[1]), minlength=256)

    def _fill_to(self, row: int) -> None:
        """Write all-nodata rows until raster row `row`, a band's height at a time (the writers gather blocks)."""
        while (done := self.writers["map"].rows_written) < row:
            n = min(row - done, self.band_rows)
            empty = np.zeros((n, self.grid.width), dtype=bool)
            for writer in self.writers.values():
                fill = CLASS_NODATA if writer is self.writers["map"] else 0
                values = np.full((writer.count, n, self.grid.width), fill, dtype=np.uint8)
                writer.write(values, empty if writer.masked else None)


def _to_byte(p: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] → uint8 0–255."""
    return np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)


def _check_options(
    k: int,
    palette: Sequence[Sequence[int]],
    tile: int,
    overlap: int,
    batch_size: int,
    steps: int,
    samples: int,
    inference_scale: float,
) -> None:
    if not 1 <= k <= 255:
        raise OptionError(f"need 1..255 class names (255 is nodata), got {k}")
    if len(palette) < k:
        raise OptionError(f"palette has {len(palette)} colours for {k} classes")
    if tile < 1 or not 0 <= overlap < tile:
        raise OptionError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if batch_size < 1 or steps < 1 or samples < 1:
        raise OptionError("batch_size, steps and samples must be at least 1")
    if not inference_scale > 0:
        raise OptionError(f"inference_scale must be positive, got {inference_scale}")


@contextmanager
def progress_reporter(
    progress: bool | ProgressCallback, total: int, unit: str = "tiles"
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`: moves a Rich bar over `total` `unit` on stderr, with their rate (True), calls
    `progress(done, total)` (a callable), or does nothing (False)."""
    if progress is True:
        columns = (TextColumn(unit), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
        with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as bar:
            task = bar.add_task(unit, total=total, rate="")

            def advance(n: int) -> None:
                bar.advance(task, n)
                speed = bar.tasks[task].speed
                bar.update(task, rate=f"{speed:.1f} {unit}/s" if speed else "")

            yield advance
    elif callable(progress):
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        yield advance
    else:
        yield lambda n: None


def _versions() -> dict[str, str]:
    return {
        "mdseg": mdseg.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }
