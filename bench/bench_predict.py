"""Whole-scene prediction cost: throughput and overhead over the model, and peak memory against scene size.

    python bench/bench_predict.py [--part all|throughput|memory|faults] [--quick] [--repeats 2]
                                  [--out bench/results/bench_predict.json]
    python bench/bench_predict.py --e2e --old-tree /tmp/e2e-old [--e2e-size 4096] [--repeats 2]

Throughput: `tiny` (1024² scene) and `small` (512² scene) with random weights saved as checkpoints, run end
to end through `SceneModel.predict` (read, reproject SAR from an offset grid, normalise, model, blend, write
the COG and sidecar). In the same process, the same tiles are read into memory once and `model.predict` is
timed on the same batches with the same generators and no I/O. Overhead = end-to-end / model − 1; target
≤ 15 %. Each side keeps its fastest of `--repeats` runs (the CPU is shared; the minimum is the least disturbed).
Also shown: the in-run overhead, from `predict_scene`'s own stage clock (total / predictor time − 1).

Memory: peak RSS (VmHWM) of scenes of 4096², 4096 × 16384 and 16384² px (height × width; sparse GeoTIFFs in
512 px blocks, every pixel valid, so every tile is read, predicted, blended and written), each in its own
subprocess, with a trivial per-pixel predictor in place of the model (a model's own memory does not depend on
the scene) and no GDAL_CACHEMAX set, so `predict_scene` bounds GDAL's block cache itself. Two comparisons:
  - same width, two heights (4096 × 16384 vs 16384²): what streaming promises, memory flat in the height;
    target within 5 %;
  - 4096² vs 16384², the issue's target, equal within 10 %. The width grows 4× too, and a run holds a few
    full-width rows by design (O(tile rows × width)), so part of this difference is legitimate.
Each run is broken down: baseline (RSS after imports, scene files and a warm-up call of the predictor), strip
accumulators (the blender's float32 rows, the sink's uint8 band, the writer's block row: computed), GDAL's
cache bound (`gdal_cache_bytes`; the sparse inputs fill it), the peak while tiles run and the peak during the
COG conversion (VmHWM reset in between through /proc/self/clear_refs), and "other", the rest of the tiling
peak: per-batch tensors, GDAL and torch state, and what glibc keeps of freed memory.

Read cost of that cache bound: a dense deflate pair (4 uint16 + 1 float32 bands, 512 px blocks) 2048 × 16384
px, read with the library's bound and with GDAL_CACHEMAX set to hold two block rows full width (each block
decoded once): seconds spent reading, peak RSS.

Faults (`--part faults`): the allocator's and OpenMP's settings, each run in its own process, the settings
alternated round by round so every one meets the same machine load: `small` over a 1024² scene (768² with
`--quick`), minor page faults (`ru_minflt`: pages the kernel had to map and zero) and process CPU seconds per
tile, counted from the end of the first batch (numba's kernels loaded, torch's pools started) to the last tile,
and wall seconds per tile. Settings: `MDSEG_MALLOC=system` (glibc's defaults) against mdseg's allocator settings
(`mdseg.alloc`); OpenMP's idle threads waiting passively (mdseg's default), spinning glibc's default 300000
rounds, or a bounded 20000 (`GOMP_SPINCOUNT`).

End to end (`--e2e`): `mdseg predict` as a user runs it (`python -m mdseg predict`, a `small` checkpoint with
random weights, the checkpoint's tile and steps, default batch) over an `--e2e-size`² pair, this tree against an
older one (`--old-tree`, e.g. `git worktree add /tmp/e2e-old 65b2412`), old and new alternated for `--repeats`
rounds; seconds per megapixel (median), the children's CPU seconds and minor faults, and whether the maps are
byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mdseg  # noqa: F401  # isort: skip  (before torch: sets OMP_WAIT_POLICY, see mdseg/__init__.py)
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

CLASSES = ["water", "forest", "field", "city", "bare", "wetland"]
PALETTE = [(0, 0, 255), (0, 128, 0), (255, 255, 0), (200, 0, 0), (150, 150, 150), (0, 200, 200)]
TILE, OVERLAP, BATCH, STEPS = 256, 64, 4, 3
PIXEL_M = 10.0
MEMORY_CLASSES = 3  # classes of the trivial predictor
ROOT = Path(__file__).resolve().parents[1]  # the source tree this script belongs to
DEFAULT_OUT = Path("bench/results/bench_predict.json")


def write_scene(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """A smooth synthetic pair: optical uint16 (4, size, size) on a 10 m UTM grid, SAR float32 dB on a grid
    shifted by 3 m and 2 px larger on each side, so SAR is warped onto the optical grid (bilinear)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / 128.0
    field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y)
    opt = np.stack([1000 + 400 * (i + 1) * field + rng.normal(0, 30, field.shape) for i in range(4)])
    sar = np.pad(-12 + 5 * field + rng.normal(0, 1, field.shape), 2, mode="edge")[None]
    common = dict(driver="GTiff", crs="EPSG:32633", tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    opt_path, sar_path = folder / f"opt_{size}.tif", folder / f"sar_{size}.tif"
    with rasterio.open(
        opt_path, "w", width=size, height=size, count=4, dtype="uint16",
        transform=from_origin(500_000, 4_000_000, PIXEL_M, PIXEL_M), **common,
    ) as dst:  # fmt: skip
        dst.write(np.clip(opt, 0, 65535).astype("uint16"))
    with rasterio.open(
        sar_path, "w", width=size + 4, height=size + 4, count=1, dtype="float32",
        transform=from_origin(500_000 - 2 * PIXEL_M + 3, 4_000_000 + 2 * PIXEL_M - 3, PIXEL_M, PIXEL_M), **common,
    ) as dst:  # fmt: skip
        dst.write(sar.astype("float32"))
    return opt_path, sar_path


def save_random_checkpoint(preset: str, path: Path) -> Path:
    """A `preset` model with seeded random weights as an mdseg checkpoint (4 optical + 1 SAR band, 6 classes)."""
    from mdseg.checkpoint import CheckpointMeta, save_checkpoint
    from mdseg.data.normalise import Normalisation
    from mdseg.models import build_model

    torch.manual_seed(0)
    model = build_model(preset, opt_bands=4, sar_bands=1, num_classes=len(CLASSES))
    meta = CheckpointMeta(
        config=model.config,
        classes=CLASSES,
        palette=PALETTE,
        opt_band_names=["B04", "B03", "B02", "B08"],
        sar_band_names=["VV"],
        normalisation=Normalisation([1000.0] * 4, [400.0] * 4, [-12.0], [5.0]),
        tile=TILE,
        steps=STEPS,
        provenance={"note": "random weights for bench_predict"},
    )
    return save_checkpoint(path, model, meta)


def model_batches(scene_model, opt: Path, sar: Path) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """The tiles `predict_scene` runs, read and normalised into memory: (opt, sar, tile seeds) per batch."""
    from mdseg.engine.checkpoint_predict import checkpoint_normaliser
    from mdseg.engine.predict import tile_seed
    from mdseg.geo.pair import RasterPair
    from mdseg.geo.tiles import tile_grid

    normalise = checkpoint_normaliser(scene_model.meta)
    items = []
    with RasterPair(opt, sar) as pair:
        w = pair.window
        for t in tile_grid(w.height, w.width, TILE, OVERLAP):
            window = rasterio.windows.Window(w.col_off + t.x, w.row_off + t.y, t.width, t.height)
            o, s, valid = pair.read(window)
            o, s = normalise(o, s)
            o, s = np.where(valid, o, 0).astype(np.float32), np.where(valid, s, 0).astype(np.float32)
            items.append((o, s, tile_seed(0, t.row, t.col)))
    batches = []
    for i in range(0, len(items), BATCH):
        chunk = items[i : i + BATCH]
        opt_t = torch.from_numpy(np.stack([c[0] for c in chunk]))
        sar_t = torch.from_numpy(np.stack([c[1] for c in chunk]))
        batches.append((opt_t, sar_t, [c[2] for c in chunk]))
    return batches


def time_model(scene_model, batches) -> float:
    """Seconds of `model.predict` over `batches` (generators made outside the timed part)."""
    total = 0.0
    for opt, sar, seeds in batches:
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        start = time.perf_counter()
        with torch.inference_mode():
            scene_model.model.predict(opt, sar, steps=STEPS, generator=gens)
        total += time.perf_counter() - start
    return total


def bench_throughput(preset: str, size: int, repeats: int, folder: Path) -> dict:
    """End-to-end scene time against model-only time on the same tiles; fastest of `repeats` each."""
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.options import PredictOptions, PredictOutputs

    opt, sar = write_scene(folder, size)
    start = time.perf_counter()
    scene_model = SceneModel.load(save_random_checkpoint(preset, folder / f"{preset}.safetensors"), "cpu")
    load_s = time.perf_counter() - start
    batches = model_batches(scene_model, opt, sar)
    time_model(scene_model, batches[:1])  # warm-up: numba kernels load (or compile) on first use
    e2e, model, stages = [], [], []
    for _ in range(repeats):
        model.append(time_model(scene_model, batches))
        start = time.perf_counter()
        result = scene_model.predict(
            opt, sar, PredictOutputs(folder / f"map_{preset}.tif", overwrite=True),
            PredictOptions(batch_size=BATCH, steps=STEPS), progress=False,
        )  # fmt: skip
        e2e.append(time.perf_counter() - start)
        stages.append(result.seconds)
    best = int(np.argmin(e2e))
    megapixels = size * size / 1e6
    return {
        "preset": preset,
        "scene_px": size,
        "tiles": result.tiles_total,
        "batch_size": BATCH,
        "steps": STEPS,
        "threads": torch.get_num_threads(),
        "sar_reprojected": result.alignment["sar_reprojected"],
        "checkpoint_load_s": load_s,
        "end_to_end_s": e2e[best],
        "model_s": min(model),
        "end_to_end_runs_s": e2e,
        "model_runs_s": model,
        "stage_s": stages[best],
        "megapixels_per_s": megapixels / e2e[best],
        "model_megapixels_per_s": megapixels / min(model),
        "overhead": e2e[best] / min(model) - 1.0,
        # The same question from one run's own stage clock (predictor calls vs everything else), immune to the
        # load of a shared machine drifting between the separate runs compared above.
        "overhead_in_run": stages[best]["total"] / stages[best]["predict"] - 1.0,
    }


def write_sparse_scene(folder: Path, height: int, width: int) -> tuple[Path, Path]:
    """A height × width pair that costs nothing to make: tiled sparse GeoTIFFs whose unwritten blocks read as 0
    (no nodata declared, so every pixel is valid), with one written 512² patch so the map is not uniform."""
    common = dict(
        driver="GTiff", width=width, height=height, crs="EPSG:32633", tiled=True, blockxsize=512, blockysize=512,
        compress="deflate", sparse_ok=True, transform=from_origin(500_000, 4_000_000, PIXEL_M, PIXEL_M),
    )  # fmt: skip
    patch = np.tile(np.arange(512, dtype="float32") % 7, (512, 1))
    with rasterio.open(folder / "opt.tif", "w", count=4, dtype="uint16", **common) as dst:
        dst.write(np.broadcast_to(patch.astype("uint16") * 100, (4, 512, 512)), window=((512, 1024), (512, 1024)))
    with rasterio.open(folder / "sar.tif", "w", count=1, dtype="float32", **common) as dst:
        dst.write(-3 * patch[None], window=((512, 1024), (512, 1024)))
    return folder / "opt.tif", folder / "sar.tif"


def write_dense_pair(folder: Path, height: int, width: int) -> tuple[Path, Path]:
    """A height × width pair with every block written (smooth field + noise, deflate, 512 px blocks, one grid),
    so reading it costs real decoding; written 512 rows at a time."""
    rng = np.random.default_rng(0)
    common = dict(
        driver="GTiff", width=width, height=height, crs="EPSG:32633", tiled=True, blockxsize=512, blockysize=512,
        compress="deflate", transform=from_origin(500_000, 4_000_000, PIXEL_M, PIXEL_M),
    )  # fmt: skip
    opt_path, sar_path = folder / "opt.tif", folder / "sar.tif"
    with (
        rasterio.open(opt_path, "w", count=4, dtype="uint16", **common) as opt,
        rasterio.open(sar_path, "w", count=1, dtype="float32", **common) as sar,
    ):
        for row in range(0, height, 512):
            n = min(512, height - row)
            y, x = np.mgrid[row : row + n, 0:width] / 128.0
            field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y)
            bands = [1000 + 400 * (i + 1) * field + rng.normal(0, 30, field.shape) for i in range(4)]
            opt.write(np.stack(bands).astype("uint16"), window=((row, row + n), (0, width)))
            sar_db = -12 + 5 * field + rng.normal(0, 1, field.shape)
            sar.write(sar_db.astype("float32")[None], window=((row, row + n), (0, width)))
    return opt_path, sar_path


def per_pixel_predictor(opt, sar, generators, steps, samples):
    """Trivial stand-in model: a per-pixel softmax of the inputs, (B, 3, h, w)."""
    return torch.softmax(torch.cat([opt[:, :2] / 500.0, sar], dim=1), dim=1)


def rss_mib(field: str = "VmHWM") -> float:
    """This process's resident memory (MiB) from /proc/self/status: `VmHWM` (peak) or `VmRSS` (now).

    Not `ru_maxrss`: on Linux it survives fork + exec, so a child started by a big parent reports the parent's
    peak until it grows past it, which would hide exactly what the memory runs measure.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status; the memory runs need Linux")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where /proc/self/clear_refs cannot be written."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def strip_bytes(height: int, width: int) -> int:
    """Bytes of the full-width strips a map-only run holds: the blender's float32 accumulators (3 classes +
    weight), the sink's uint8 band (a tile high) and the writer's uint8 block row."""
    from mdseg.geo.blend import TileBlender
    from mdseg.geo.tiles import tile_grid
    from mdseg.geo.writer import BLOCK

    tiles = tile_grid(height, width, TILE, OVERLAP)
    blender = TileBlender(tiles, height, width, MEMORY_CLASSES).nbytes
    return blender + (min(TILE, height) + min(BLOCK, height)) * width


def memory_run(height: int, width: int) -> dict:
    """Peak RSS (MiB) of one `predict_scene` over a sparse height × width scene with the trivial predictor, and
    its breakdown (run this in a fresh process so the peak is this scene's alone)."""
    from mdseg.engine.predict import PredictOptions, TileModel, gdal_cache_bytes, predict_scene
    from mdseg.geo.pair import RasterPair

    with tempfile.TemporaryDirectory() as tmp:
        opt, sar = write_sparse_scene(Path(tmp), height, width)
        # torch allocates its own state on a first call: part of the baseline, as a model's load would be.
        x = torch.zeros(BATCH, 4, TILE, TILE)
        per_pixel_predictor(x, x[:, :1], [], STEPS, 1)
        process_peak = rss_mib("VmHWM")
        baseline = rss_mib("VmRSS")
        phases = reset_peak_rss()
        peaks = {}

        def progress(done: int, total: int) -> None:
            if done == total and phases:
                peaks["tiles"] = rss_mib("VmHWM")
                reset_peak_rss()

        start = time.perf_counter()
        model = TileModel(per_pixel_predictor, CLASSES[:MEMORY_CLASSES], PALETTE[:MEMORY_CLASSES])
        options = PredictOptions(tile=TILE, overlap=OVERLAP, batch_size=BATCH)
        result = predict_scene(opt, sar, Path(tmp) / "map.tif", model, options, progress=progress)
        seconds = time.perf_counter() - start
        peaks["finish" if phases else "run"] = rss_mib("VmHWM")
        with RasterPair(opt, sar) as pair:
            cache = gdal_cache_bytes(pair, TILE) / 2**20
    strips = strip_bytes(height, width) / 2**20
    tiles_peak = peaks.get("tiles")
    return {
        "height": height,
        "width": width,
        "tiles_run": result.tiles_run,
        "seconds": seconds,
        "stage_s": result.seconds,
        "baseline_mib": baseline,
        "strips_mib": strips,
        "gdal_cache_bound_mib": cache,
        "tiles_peak_mib": tiles_peak,
        "cog_finish_peak_mib": peaks.get("finish"),
        "other_mib": None if tiles_peak is None else tiles_peak - baseline - strips - cache,
        "peak_rss_mib": max(process_peak, *peaks.values()),
    }


def read_cost_run(height: int, width: int, folder: Path) -> dict:
    """Seconds reading (and in all) and peak RSS of `predict_scene` over the dense pair in `folder` with the
    trivial predictor, under whatever GDAL_CACHEMAX the environment sets (none: the library's bound)."""
    from mdseg.engine.predict import PredictOptions, PredictOutputs, TileModel, predict_scene

    result = predict_scene(
        folder / "opt.tif", folder / "sar.tif", PredictOutputs(folder / "map.tif", overwrite=True),
        TileModel(per_pixel_predictor, CLASSES[:MEMORY_CLASSES], PALETTE[:MEMORY_CLASSES]),
        PredictOptions(tile=TILE, overlap=OVERLAP, batch_size=BATCH), progress=False,
    )  # fmt: skip
    return {
        "height": height,
        "width": width,
        "gdal_cachemax": os.environ.get("GDAL_CACHEMAX"),
        "read_s": result.seconds["read"],
        "total_s": result.seconds["total"],
        "peak_rss_mib": rss_mib("VmHWM"),
    }


# (name, environment) of the settings the faults part alternates; "mdseg" is what `mdseg predict` runs with.
FAULT_SETTINGS = (
    ("malloc system", {"MDSEG_MALLOC": "system"}),
    ("malloc mdseg", {}),
)
OMP_SETTINGS = (
    ("omp passive", {}),
    ("omp spin 20000", {"GOMP_SPINCOUNT": "20000"}),
    ("omp spin 300000", {"GOMP_SPINCOUNT": "300000"}),
)


def usage_now() -> tuple[int, float, float]:
    """(minor faults, process CPU seconds, wall seconds) now."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_minflt, u.ru_utime + u.ru_stime, time.perf_counter()


def faults_run(preset: str, folder: Path) -> dict:
    """One `SceneModel.predict` over the pair in `folder` in this process, under the allocator settings the
    CLI applies (or not, with MDSEG_MALLOC=system): minor faults, CPU and wall seconds per tile after the first
    batch, and over the whole run."""
    import mdseg.alloc
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.options import PredictOptions, PredictOutputs

    applied = mdseg.alloc.configure()  # as `mdseg predict` does first thing
    scene_model = SceneModel.load(folder / f"{preset}.safetensors", "cpu")
    marks: list[tuple[int, tuple[int, float, float]]] = []

    def progress(done: int, total: int) -> None:
        marks.append((done, usage_now()))

    start = usage_now()
    result = scene_model.predict(
        folder / "opt.tif",
        folder / "sar.tif",
        PredictOutputs(folder / f"map_{os.getpid()}.tif", overwrite=True),
        PredictOptions(steps=STEPS),
        progress=progress,
    )  # fmt: skip  (the default batch, as `mdseg predict` runs)
    end = usage_now()
    (first_done, first), (last_done, last) = marks[0], marks[-1]
    tiles = last_done - first_done
    if tiles == 0:
        raise SystemExit(f"{result.tiles_total} tiles ran in one batch: nothing left to measure after the first")
    return {
        "malloc": os.environ.get("MDSEG_MALLOC", "mdseg"),
        "malloc_applied": bool(applied),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "tiles_total": result.tiles_total,
        "tiles_measured": tiles,
        "faults_per_tile": (last[0] - first[0]) / tiles,
        "cpu_s_per_tile": (last[1] - first[1]) / tiles,
        "wall_s_per_tile": (last[2] - first[2]) / tiles,
        "run_faults": end[0] - start[0],
        "run_cpu_s": end[1] - start[1],
        "run_wall_s": end[2] - start[2],
        "peak_rss_mib": rss_mib("VmHWM"),
    }


def small_scene_folder(folder: Path, size: int) -> Path:
    """`folder` holding a `size`² synthetic pair (`opt.tif`, `sar.tif`) and a random-weight `small.safetensors`."""
    opt, sar = write_scene(folder, size)
    opt.rename(folder / "opt.tif"), sar.rename(folder / "sar.tif")
    save_random_checkpoint("small", folder / "small.safetensors")
    return folder


def bench_faults(quick: bool, rounds: int, settings: tuple) -> list[dict]:
    """`rounds` rounds of one `faults_run` per setting, each in a fresh process, the settings alternated."""
    size = 768 if quick else 1024
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = small_scene_folder(Path(tmp), size)
        for r in range(rounds):
            order = settings if r % 2 == 0 else settings[::-1]
            for name, env in order:
                run = run_child(["--faults-one", "small", str(folder)], env)
                runs.append({"setting": name, "round": r, "scene_px": size, **run})
                line = (
                    f"{run['faults_per_tile']:9.0f} faults, {run['cpu_s_per_tile']:6.2f} CPU s, "
                    f"{run['wall_s_per_tile']:6.2f} s"
                )
                print(f"  round {r} {name:16} per tile: {line}", flush=True)
    return runs


def summarise_faults(runs: list[dict], settings: tuple) -> list[dict]:
    """Per setting: medians over rounds, and ratios to the first setting (the baseline)."""
    rows = []
    for name, _ in settings:
        mine = [r for r in runs if r["setting"] == name]
        rows.append(
            {
                "setting": name,
                "runs": len(mine),
                **{k: statistics.median(r[k] for r in mine) for k in ("faults_per_tile", "cpu_s_per_tile",
                                                                     "wall_s_per_tile", "run_cpu_s", "peak_rss_mib")},
            }
        )  # fmt: skip
    base = rows[0]
    for row in rows:
        for k in ("faults_per_tile", "cpu_s_per_tile", "wall_s_per_tile"):
            row[f"{k}_vs_{base['setting']}"] = base[k] / row[k] if row[k] else None
    return rows


def print_faults(rows: list[dict]) -> None:
    base = rows[0]["setting"]
    header = (
        f"{'setting':16} {'runs':>4} {'faults/tile':>11} {'CPU s/tile':>10} {'s/tile':>7} {'run CPU s':>9} "
        f"{'peak MiB':>8} {'fewer faults':>12} {'less CPU':>8} {'faster':>7}"
    )
    print(
        f"faults: small, batch 8, per tile after the first batch; medians of alternated runs; ratios: {base} / setting"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['setting']:16} {r['runs']:4} {r['faults_per_tile']:11.0f} {r['cpu_s_per_tile']:10.3f} "
            f"{r['wall_s_per_tile']:7.3f} {r['run_cpu_s']:9.1f} {r['peak_rss_mib']:8.0f} "
            f"{r[f'faults_per_tile_vs_{base}']:11.2f}x "
            f"{r[f'cpu_s_per_tile_vs_{base}']:7.2f}x {r[f'wall_s_per_tile_vs_{base}']:6.2f}x"
        )
    print()


def git_head(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def e2e_run(tree: Path, folder: Path, out: Path) -> dict:
    """`python -m mdseg predict` from source tree `tree` over the pair in `folder`: wall seconds, the child's
    CPU seconds and minor faults, and the map's SHA-256."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mdseg", "predict", "--opt", str(folder / "opt.tif"), "--sar", str(folder / "sar.tif"),
         "--checkpoint", str(folder / "small.safetensors"), "--out", str(out), "--overwrite"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=folder,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"mdseg predict from {tree} failed:\n{done.stderr}")
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "map_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }


def bench_e2e(old_tree: Path, size: int, rounds: int) -> dict:
    """Old tree against this one, end to end through the CLI, alternated for `rounds` rounds."""
    trees = {"old": old_tree.resolve(), "new": ROOT}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = small_scene_folder(Path(tmp), size)
        for r in range(rounds):
            for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                run = e2e_run(trees[side], folder, folder / f"map_{side}.tif")
                runs.append({"side": side, "round": r, **run})
                print(f"  round {r} {side}: {run['wall_s']:7.1f} s, CPU {run['cpu_s']:7.1f} s, "
                      f"{run['minor_faults']} minor faults", flush=True)  # fmt: skip
    megapixels = size * size / 1e6
    sides = {}
    for side, tree in trees.items():
        mine = [r for r in runs if r["side"] == side]
        sides[side] = {
            "tree": str(tree),
            "commit": git_head(tree),
            "s_per_megapixel": statistics.median(r["wall_s"] for r in mine) / megapixels,
            "cpu_s_per_megapixel": statistics.median(r["cpu_s"] for r in mine) / megapixels,
            "minor_faults": statistics.median(r["minor_faults"] for r in mine),
        }
    hashes = {side: {r["map_sha256"] for r in runs if r["side"] == side} for side in trees}
    return {
        "scene_px": size,
        "preset": "small",
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "runs": runs,
        "sides": sides,
        "speedup": sides["old"]["s_per_megapixel"] / sides["new"]["s_per_megapixel"],
        "cpu_ratio": sides["old"]["cpu_s_per_megapixel"] / sides["new"]["cpu_s_per_megapixel"],
        "faults_ratio": sides["old"]["minor_faults"] / sides["new"]["minor_faults"],
        "maps_identical": len(hashes["old"] | hashes["new"]) == 1,
    }


def print_e2e(e2e: dict) -> None:
    print(f"end to end: mdseg predict, small, {e2e['scene_px']}² px, {e2e['threads']} threads, "
          f"medians of {e2e['rounds']} alternated rounds")  # fmt: skip
    header = f"{'side':4} {'commit':>9} {'s/Mpx':>7} {'CPU s/Mpx':>9} {'minor faults':>12}"
    print(header)
    print("-" * len(header))
    for side, s in e2e["sides"].items():
        print(
            f"{side:4} {s['commit']:>9} {s['s_per_megapixel']:7.2f} {s['cpu_s_per_megapixel']:9.2f} "
            f"{s['minor_faults']:12.0f}"
        )
    print(f"old / new: {e2e['speedup']:.2f}x s/Mpx, {e2e['cpu_ratio']:.2f}x CPU, {e2e['faults_ratio']:.1f}x faults; "
          f"maps byte-identical: {e2e['maps_identical']}")  # fmt: skip
    print()


def print_throughput(throughput: list[dict]) -> None:
    header = (
        f"{'preset':7} {'scene':>6} {'tiles':>5} {'e2e s':>7} {'model s':>8} {'MP/s':>6} {'model MP/s':>10} "
        f"{'overhead':>8} {'in-run':>7} {'read s':>7} {'predict s':>9} {'blend+write s':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in throughput:
        s = r["stage_s"]
        print(
            f"{r['preset']:7} {r['scene_px']:>5}² {r['tiles']:5} {r['end_to_end_s']:7.2f} {r['model_s']:8.2f} "
            f"{r['megapixels_per_s']:6.3f} {r['model_megapixels_per_s']:10.3f} {r['overhead']:8.1%} "
            f"{r['overhead_in_run']:7.1%} "
            f"{s['read']:7.2f} {s['predict']:9.2f} {s['blend_write']:13.2f}"
        )
    print()


def print_memory(memory: list[dict], read_cost: list[dict]) -> None:
    print("memory (MiB): trivial per-pixel predictor (not the model), every tile run, no GDAL_CACHEMAX set")
    header = (
        f"{'scene h × w':>13} {'tiles':>5} {'s':>5} {'baseline':>8} {'strips':>6} {'GDAL cache':>10} {'other':>6} "
        f"{'tiles peak':>10} {'COG peak':>8} {'peak RSS':>8} {'run':>5}"
    )
    print(header)
    print("-" * len(header))

    def mib(v: float | None, width: int) -> str:
        return f"{'n/a':>{width}}" if v is None else f"{v:{width}.0f}"

    for r in memory:
        print(
            f"{r['height']:>6} × {r['width']:<5} {r['tiles_run']:5} {r['seconds']:5.0f} {r['baseline_mib']:8.0f} "
            f"{r['strips_mib']:6.0f} {r['gdal_cache_bound_mib']:10.0f} {mib(r['other_mib'], 6)} "
            f"{mib(r['tiles_peak_mib'], 10)} {mib(r['cog_finish_peak_mib'], 8)} {r['peak_rss_mib']:8.0f} "
            f"{r['peak_rss_mib'] - r['baseline_mib']:5.0f}"
        )
    print("run = peak RSS − baseline; other = tiles peak − baseline − strips − GDAL cache")
    print()
    if read_cost:
        print("read cost of the cache bound: dense deflate pair, 512 px blocks, trivial predictor")
        header = f"{'pair h × w':>13} {'GDAL_CACHEMAX':>20} {'read s':>7} {'total s':>8} {'peak RSS MiB':>12}"
        print(header)
        print("-" * len(header))
        for r in read_cost:
            cache = f"{r['gdal_cachemax']} MB" if r["gdal_cachemax"] else "unset (library)"
            print(
                f"{r['height']:>6} × {r['width']:<5} {cache:>20} {r['read_s']:7.2f} {r['total_s']:8.2f} "
                f"{r['peak_rss_mib']:12.0f}"
            )
        print()


def targets(throughput: list[dict], memory: list[dict]) -> list[dict]:
    checks = [
        (f"{r['preset']} read+reproject+blend+write add <= 15% to model time", r["overhead"], 0.15) for r in throughput
    ]
    if len(memory) == 3:
        small, wide, big = memory
        checks.append(
            (
                f"peak RSS {big['height']} vs {wide['height']} rows at width {big['width']} within 5% (flat in height)",
                big["peak_rss_mib"] / wide["peak_rss_mib"] - 1.0,
                0.05,
            )
        )
        checks.append(
            (
                f"peak RSS {big['height']}² vs {small['height']}² within 10% (width and height 4x)",
                big["peak_rss_mib"] / small["peak_rss_mib"] - 1.0,
                0.10,
            )
        )
    out = []
    for name, value, bound in checks:
        ok = value <= bound
        out.append({"target": name, "value": value, "bound": bound, "pass": ok})
        print(f"{'PASS' if ok else 'FAIL'}  {name}: measured {value:+.1%}")
    return out


def run_child(args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run this script with internal `args` in a fresh interpreter; its last stdout line is JSON."""
    # The children import mdseg from this script's tree, whatever tree the installed package points at.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(quick: bool) -> tuple[list[dict], list[dict]]:
    """The memory runs (small, wide, big scene) and the read-cost runs, each in its own process."""
    if "GDAL_CACHEMAX" in os.environ:
        raise SystemExit("unset GDAL_CACHEMAX: the memory runs measure the cache bound predict_scene sets itself")
    scenes = ((1024, 1024), (1024, 4096), (4096, 4096)) if quick else ((4096, 4096), (4096, 16384), (16384, 16384))
    memory = [run_child(["--memory-one", str(h), str(w)]) for h, w in scenes]
    height, width = (1024, 8192) if quick else (2048, 16384)
    # Two block rows of both files, full width (4 × 2 + 4 bytes a pixel), and room for the rest: no block decoded
    # twice.
    decode_once_mib = 2 * 512 * width * 12 // 2**20 + 16
    with tempfile.TemporaryDirectory() as tmp:
        write_dense_pair(Path(tmp), height, width)
        read_cost = [
            run_child(["--read-one", str(height), str(width), tmp], env)
            for env in ({}, {"GDAL_CACHEMAX": str(decode_once_mib)})
        ]
    return memory, read_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--part", choices=("all", "throughput", "memory", "faults"), default="all", help="what to measure"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller scenes (512² tiny, 256² small; memory up to 4096²)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side; the fastest counts")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON results (--part faults: *_faults.json, --e2e: *_e2e.json)"
    )
    parser.add_argument("--omp", action="store_true", help="faults part: compare OpenMP wait settings too")
    parser.add_argument("--e2e", action="store_true", help="end to end against --old-tree (own JSON file)")
    parser.add_argument("--old-tree", type=Path, help="source tree of the old code (a git worktree)")
    parser.add_argument("--e2e-size", type=int, default=4096, help="scene side in px for --e2e")
    # Internal: one faults run (preset, folder) in this process, JSON out.
    parser.add_argument("--faults-one", nargs=2, help=argparse.SUPPRESS)
    # Internal: one memory run (height, width) or read-cost run (height, width, folder) in this process, JSON out.
    parser.add_argument("--memory-one", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--read-one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_one:
        print(json.dumps(memory_run(*args.memory_one)))
        return
    if args.read_one:
        height, width, folder = args.read_one
        print(json.dumps(read_cost_run(int(height), int(width), Path(folder))))
        return
    if args.faults_one:
        print(json.dumps(faults_run(args.faults_one[0], Path(args.faults_one[1]))))
        return
    if args.e2e:
        if args.old_tree is None:
            parser.error("--e2e needs --old-tree")
        e2e = bench_e2e(args.old_tree, args.e2e_size, args.repeats)
        print_e2e(e2e)
        out = args.out.with_name("bench_predict_e2e.json") if args.out == DEFAULT_OUT else args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(e2e, indent=1))
        print(f"wrote {out}")
        return
    throughput, memory, read_cost, faults, fault_runs = [], [], [], [], []
    if args.part in ("all", "throughput"):
        scenes = {"tiny": 512, "small": 256} if args.quick else {"tiny": 1024, "small": 512}
        with tempfile.TemporaryDirectory() as tmp:
            for preset, size in scenes.items():
                throughput.append(bench_throughput(preset, size, args.repeats, Path(tmp)))
    if args.part in ("all", "memory"):
        memory, read_cost = bench_memory(args.quick)
    if args.part in ("all", "faults"):
        settings = FAULT_SETTINGS + (OMP_SETTINGS[1:] if args.omp else ())
        fault_runs = bench_faults(args.quick, args.repeats, settings)
        faults = summarise_faults(fault_runs, settings)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32, tile {TILE}, overlap {OVERLAP}, "
          f"batch {BATCH}, steps {STEPS}, SAR warped from a 3 m-shifted grid")  # fmt: skip
    if throughput:
        print_throughput(throughput)
    if memory:
        print_memory(memory, read_cost)
    if faults:
        print_faults(faults)
    checks = targets(throughput, memory)
    if args.part == "faults" and args.out == DEFAULT_OUT:  # keep the throughput and memory figures
        args.out = args.out.with_name("bench_predict_faults.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "part": args.part,
        "throughput": throughput,
        "memory": memory,
        "read_cost": read_cost,
        "faults": faults,
        "fault_runs": fault_runs,
    }
    args.out.write_text(json.dumps({**results, "targets": checks}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
