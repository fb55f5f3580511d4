"""Whole-scene prediction cost: throughput and overhead over the model, and peak memory against scene size.

    python bench/bench_predict.py [--quick] [--repeats 2] [--out bench/results/bench_predict.json]

Throughput: `tiny` (1024² scene) and `small` (512² scene) with random weights saved as checkpoints, run end
to end through `SceneModel.predict` (read, reproject SAR from an offset grid, normalise, model, blend, write
the COG and sidecar). In the same process, the same tiles are read into memory once and `model.predict` is
timed on the same batches with the same generators and no I/O. Overhead = end-to-end / model − 1; target
≤ 15 %. Each side keeps its fastest of `--repeats` runs (the CPU is shared; the minimum is the least disturbed).
Also shown: the in-run overhead, from `predict_scene`'s own stage clock (total / predictor time − 1).

Memory: peak RSS of a scene of 4096² and of 16384² px (a sparse GeoTIFF, every pixel valid, so every tile is
read, predicted, blended and written), each in its own subprocess, with a trivial per-pixel predictor in place
of the model (the model's own memory does not depend on the scene). Target: equal within 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
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
# A bounded GDAL block cache for the memory runs, as on a real machine: the default (5 % of RAM) would let the
# cache, not mdseg, decide how much of a scene stays in memory.
GDAL_CACHE_MIB = 64


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
    from mdseg.engine.normalise import Normalisation
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
            opt, sar, folder / f"map_{preset}.tif", batch_size=BATCH, steps=STEPS, overwrite=True, progress=False
        )
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


def write_sparse_scene(folder: Path, size: int) -> tuple[Path, Path]:
    """A size² pair that costs nothing to make: tiled sparse GeoTIFFs whose unwritten blocks read as 0 (no nodata
    declared, so every pixel is valid), with one written 512² patch so the map is not uniform."""
    common = dict(
        driver="GTiff", width=size, height=size, crs="EPSG:32633", tiled=True, blockxsize=512, blockysize=512,
        compress="deflate", sparse_ok=True, transform=from_origin(500_000, 4_000_000, PIXEL_M, PIXEL_M),
    )  # fmt: skip
    patch = np.tile(np.arange(512, dtype="float32") % 7, (512, 1))
    with rasterio.open(folder / "opt.tif", "w", count=4, dtype="uint16", **common) as dst:
        dst.write(np.broadcast_to(patch.astype("uint16") * 100, (4, 512, 512)), window=((512, 1024), (512, 1024)))
    with rasterio.open(folder / "sar.tif", "w", count=1, dtype="float32", **common) as dst:
        dst.write(-3 * patch[None], window=((512, 1024), (512, 1024)))
    return folder / "opt.tif", folder / "sar.tif"


def per_pixel_predictor(opt, sar, generators, steps, samples):
    """Trivial stand-in model: a per-pixel softmax of the inputs, (B, 3, h, w)."""
    return torch.softmax(torch.cat([opt[:, :2] / 500.0, sar], dim=1), dim=1)


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): VmHWM from /proc, not `ru_maxrss`.

    On Linux `ru_maxrss` survives fork + exec: a child started by a big parent reports the parent's peak until
    it grows past it, which would hide exactly what the memory runs measure.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status; the memory runs need Linux")


def memory_run(size: int) -> dict:
    """Peak RSS (MiB) of one `predict_scene` over a sparse size² scene with the trivial predictor (run this in a
    fresh process so the peak is this scene's alone)."""
    from mdseg.engine.predict import predict_scene

    with tempfile.TemporaryDirectory() as tmp:
        opt, sar = write_sparse_scene(Path(tmp), size)
        before = peak_rss_mib()
        start = time.perf_counter()
        result = predict_scene(
            opt, sar, Path(tmp) / "map.tif", per_pixel_predictor, classes=CLASSES[:3], palette=PALETTE[:3],
            tile=TILE, overlap=OVERLAP, batch_size=BATCH, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return {
        "scene_px": size,
        "tiles_run": result.tiles_run,
        "seconds": seconds,
        "stage_s": result.seconds,
        "rss_before_run_mib": before,
        "peak_rss_mib": peak_rss_mib(),
    }


def print_tables(throughput: list[dict], memory: list[dict]) -> None:
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
    print(f"memory: trivial per-pixel predictor (not the model), GDAL_CACHEMAX={GDAL_CACHE_MIB} MiB, every tile run")
    header = f"{'scene':>7} {'tiles':>6} {'seconds':>8} {'RSS before run MiB':>18} {'peak RSS MiB':>12}"
    print(header)
    print("-" * len(header))
    for r in memory:
        print(
            f"{r['scene_px']:>6}² {r['tiles_run']:6} {r['seconds']:8.1f} {r['rss_before_run_mib']:18.0f} "
            f"{r['peak_rss_mib']:12.0f}"
        )


def targets(throughput: list[dict], memory: list[dict]) -> list[dict]:
    checks = [
        (f"{r['preset']} read+reproject+blend+write add <= 15% to model time", r["overhead"], 0.15) for r in throughput
    ]
    if len(memory) == 2:
        small, big = sorted(memory, key=lambda r: r["scene_px"])
        ratio = big["peak_rss_mib"] / small["peak_rss_mib"] - 1.0
        checks.append((f"peak RSS {big['scene_px']}² vs {small['scene_px']}² within 10%", ratio, 0.10))
    out = []
    for name, value, bound in checks:
        ok = value <= bound
        out.append({"target": name, "value": value, "bound": bound, "pass": ok})
        print(f"{'PASS' if ok else 'FAIL'}  {name}: measured {value:+.1%}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller scenes (512² tiny, 256² small, 1024²/4096²)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side; the fastest counts")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_predict.json"))
    parser.add_argument("--memory-one", type=int, help=argparse.SUPPRESS)  # internal: one memory run, JSON out
    args = parser.parse_args()
    if args.memory_one:
        print(json.dumps(memory_run(args.memory_one)))
        return
    scenes = {"tiny": 512, "small": 256} if args.quick else {"tiny": 1024, "small": 512}
    mem_sizes = (1024, 4096) if args.quick else (4096, 16384)
    throughput = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, size in scenes.items():
            throughput.append(bench_throughput(preset, size, args.repeats, Path(tmp)))
    memory = []
    env = {**os.environ, "GDAL_CACHEMAX": str(GDAL_CACHE_MIB)}
    for size in mem_sizes:
        cmd = [sys.executable, __file__, "--memory-one", str(size)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32, tile {TILE}, overlap {OVERLAP}, "
          f"batch {BATCH}, steps {STEPS}, SAR warped from a 3 m-shifted grid")  # fmt: skip
    print_tables(throughput, memory)
    checks = targets(throughput, memory)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"throughput": throughput, "memory": memory, "targets": checks}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
