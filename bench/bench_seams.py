"""Tile size and overlap for scene prediction: pixels the model processes, time, seams and mIoU per candidate.

    python bench/bench_seams.py [--quick] [--candidates 256:64,544:32,…] [--synth-size 2048] [--rounds 3]
                                [--out bench/results/bench_seams.json]

For each candidate (tile, overlap) in scene pixels, with the shipped demo weights on CPU:

- pixel ratio: pixels the model processes (tiles × tile², as `tile_grid` lays them; a scene smaller than a tile
  is padded up to one) per scene pixel, for scenes of 1000², 1024² (the sample), 2048² and 10000², and the
  largest of those;
- s/Mpx: model seconds per processed megapixel (one batch of tiles of that size, medians of `rounds`
  interleaved rounds, so a burst of load elsewhere hits every size alike) and per scene megapixel (the
  whole-scene runs below: what a user waits);
- seams (`mdseg.geo.blend.seam_stats`): class disagreement and probability jump between adjacent pixels
  across inner tile edges against inside single tiles (edge / interior), on the shipped sample and a synthetic
  scene (`--synth-size`², seed 11); the same ratio of the scene's untiled map (one tile over the whole scene)
  at the same pixel pairs measures the content's own contrast along those lines, and the excess (tiled ratio /
  untiled ratio) is the seam: 1 means none;
- mIoU of the map on the sample (and the synthetic scene) against its label, and the difference from the
  first candidate (today's 256/64);
- full mode: peak RSS of one model call on a batch of 8 tiles (the default `--batch-size`) per tile size.

The defaults that `SceneModel.sampling` picks for the demo weights are marked, and the targets are printed as
PASS/FAIL with their measured ratios: pixel ratio ≤ 1.4 at every size, s per processed Mpx no higher than
256² tiles' (×1.10 for noise), seam excess ≤ 1.15 on both scenes, |ΔmIoU| ≤ 0.005 against 256/64, and a
candidate without overlap (the control) showing a seam (jump excess > 1.15), or the metric proves nothing.
`--quick`: candidates 256:64, the default and the default without overlap (a seam the metric must see), the
sample only, one timing round, no memory.
"""

from __future__ import annotations

import mdseg  # noqa: F401  # isort: skip  (before torch: OpenMP threads must wait passively, see mdseg/__init__)
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from mdseg.engine.checkpoint_predict import SceneModel
from mdseg.engine.options import PredictOptions
from mdseg.engine.predict import ScenePass, open_scene
from mdseg.geo.blend import seam_stats
from mdseg.geo.tiles import tile_grid
from mdseg.metrics import ConfusionMatrix, compute_metrics

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "synthetic"
RATIO_SIZES = (1000, 1024, 2048, 10000)
FULL_CANDIDATES = ((256, 64), (256, 32), (512, 32), (544, 32), (544, 16), (576, 64), (544, 0))
TARGET_RATIO, TARGET_SEAM, TARGET_MIOU, TIME_NOISE = 1.4, 1.15, 0.005, 1.10
BATCH = 8


def pixel_ratio(size: int, tile: int, overlap: int) -> float:
    """Pixels the model processes per pixel of a size² scene: the tiles `tile_grid` lays, each padded to tile²."""
    tiles = tile_grid(size, size, tile, overlap)
    return len(tiles) * tile * tile / (size * size)


def model_seconds_per_mpx(model: SceneModel, tiles: list[int], rounds: int) -> dict[int, float]:
    """Median model seconds per processed megapixel for each tile size: one call on a batch of tiles holding
    about 4 × 256² pixels (at least one tile), the sizes interleaved within each round."""
    predictor, steps = model.tile_model().predictor, model.meta.steps
    gen = torch.Generator().manual_seed(0)
    inputs = {}
    for t in tiles:
        b = max(1, round(4 * 256 * 256 / (t * t)))
        opt = torch.randn(b, model.meta.config.opt_bands, t, t, generator=gen)
        sar = torch.randn(b, model.meta.config.sar_bands, t, t, generator=gen)
        inputs[t] = (opt, sar, b)
    for t in tiles:  # warm-up (numba compiles on first use)
        opt, sar, b = inputs[t]
        predictor(opt[:1], sar[:1], [torch.Generator().manual_seed(0)], steps, 1)
    times: dict[int, list[float]] = {t: [] for t in tiles}
    for _ in range(rounds):
        for t in tiles:
            opt, sar, b = inputs[t]
            start = time.perf_counter()
            predictor(opt, sar, [torch.Generator().manual_seed(i) for i in range(b)], steps, 1)
            times[t].append((time.perf_counter() - start) / (b * t * t / 1e6))
    return {t: statistics.median(v) for t, v in times.items()}


def batch_peak_mib(tile: int) -> float:
    """Peak RSS (MiB) of a fresh process that loads the demo weights and predicts one batch of 8 tile² tiles
    (Linux: the process's VmHWM)."""
    done = subprocess.run(
        [sys.executable, __file__, "--memory-of", str(tile)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def _memory_child(tile: int) -> None:
    model = SceneModel.load(None, device="cpu")
    c = model.meta.config
    gens = [torch.Generator().manual_seed(i) for i in range(BATCH)]
    model.tile_model().predictor(
        torch.randn(BATCH, c.opt_bands, tile, tile), torch.randn(BATCH, c.sar_bands, tile, tile), gens, 3, 1
    )
    # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS over fork and exec into ru_maxrss.
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def run_scene(model: SceneModel, opt: Path, sar: Path, label: Path, tile: int, overlap: int) -> dict:
    """Predict a scene with (tile, overlap) through the predict engine, in memory: blended probabilities
    `values` (K, H, W), `covered`, the tiles, seconds, seconds per scene megapixel and mIoU against `label`."""
    options = model.sampling(PredictOptions(tile=tile, overlap=overlap))
    tm = model.tile_model()
    timer = {"read": 0.0, "predict": 0.0}
    with open_scene(opt, sar, tm, options) as (pair, _):
        scene = ScenePass(pair, tm, options, model.device)
        height, width = int(pair.window.height), int(pair.window.width)
        k = len(tm.classes)
        values = np.zeros((k, height, width), dtype=np.float32)
        covered = np.zeros((height, width), dtype=bool)
        start = time.perf_counter()
        for block in scene.blocks(lambda _: None, timer):
            n, m = block.covered.shape
            values[:, block.row : block.row + n, block.col : block.col + m] = block.values[:k]
            covered[block.row : block.row + n, block.col : block.col + m] = block.covered
        seconds = time.perf_counter() - start
    with rasterio.open(label) as src:
        truth = src.read(1).astype(np.int64)
    cm = ConfusionMatrix(k)
    cm.update(truth, values.argmax(axis=0), covered & (truth != 255))
    return {
        "values": values,
        "covered": covered,
        "tiles": scene.tiles,
        "seconds": seconds,
        "s_per_scene_mpx": seconds / (height * width / 1e6),
        "miou": float(compute_metrics(cm.matrix).miou),
    }


def seam_record(run: dict, reference: dict) -> dict:
    """Seam statistics of a run, and of the untiled `reference` map at the same pixel pairs: the content's own
    contrast along those lines (a synthetic city's blocks sit on a 32 px grid), which the excess divides out."""
    tiled = seam_stats(run["values"], run["covered"], run["tiles"])
    untiled = seam_stats(reference["values"], reference["covered"], run["tiles"])
    out = {"tiled": tiled.__dict__, "untiled": untiled.__dict__}
    for kind in ("disagreement", "jump"):
        a, b = getattr(tiled, f"{kind}_ratio"), getattr(untiled, f"{kind}_ratio")
        out[f"{kind}_ratio"], out[f"{kind}_reference"], out[f"{kind}_excess"] = a, b, a / b
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--candidates", help="tile:overlap pairs, comma-separated (first = the baseline)")
    parser.add_argument("--synth-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_seams.json")
    parser.add_argument("--memory-of", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        _memory_child(args.memory_of)
        return

    torch.manual_seed(0)
    model = SceneModel.load(None, device="cpu")
    chosen = model.sampling()
    default = (chosen.tile, chosen.overlap)
    if args.candidates:
        candidates = [tuple(int(v) for v in c.split(":")) for c in args.candidates.split(",")]
    elif args.quick:
        candidates = [(256, 64), default, (default[0], 0)]
    else:
        candidates = list(dict.fromkeys([*FULL_CANDIDATES, default]))
    rounds = 1 if args.quick else args.rounds

    scenes = {"sample": (SAMPLE / "synth_7_opt.tif", SAMPLE / "synth_7_sar.tif", SAMPLE / "synth_7_label.tif")}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.quick:
            from mdseg.synth.files import synthesize_scene

            f = synthesize_scene(tmp, seed=11, size=args.synth_size)
            scenes[f"synth{args.synth_size}"] = (f.opt, f.sar, f.label)
        sizes = sorted({t for t, _ in candidates})
        per_mpx = model_seconds_per_mpx(model, sizes, rounds)
        rows = []
        references = {}
        for name, (opt, sar, label) in scenes.items():
            with rasterio.open(opt) as src:
                side = max(src.height, src.width)
            # One tile over the whole scene: the map without tile edges, the seams' reference.
            references[name] = run_scene(model, opt, sar, label, side, 0)
        for tile, overlap in candidates:
            row = {
                "tile": tile,
                "overlap": overlap,
                "default": (tile, overlap) == default,
                "pixel_ratio": {str(s): pixel_ratio(s, tile, overlap) for s in RATIO_SIZES},
                "s_per_processed_mpx": per_mpx[tile],
                "scenes": {},
            }
            row["pixel_ratio_max"] = max(row["pixel_ratio"].values())
            for name, (opt, sar, label) in scenes.items():
                run = run_scene(model, opt, sar, label, tile, overlap)
                row["scenes"][name] = {
                    "tiles": len(run["tiles"]),
                    "seconds": run["seconds"],
                    "s_per_scene_mpx": run["s_per_scene_mpx"],
                    "miou": run["miou"],
                    "seam": seam_record(run, references[name]),
                }
                print(f"  {tile}/{overlap} {name}: {row['scenes'][name]}", file=sys.stderr, flush=True)
            rows.append(row)
    if not args.quick:
        for tile in sizes:
            for row in rows:
                if row["tile"] == tile:
                    row["batch8_peak_mib"] = batch_peak_mib(tile)
                    break

    base = rows[0]
    for row in rows:
        row["miou_delta"] = row["scenes"]["sample"]["miou"] - base["scenes"]["sample"]["miou"]
        row["time_vs_base"] = row["s_per_processed_mpx"] / base["s_per_processed_mpx"]
    print_table(rows, scenes)
    targets = check_targets(rows, default, base)
    for name, (ok, text) in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {text}")
    record = {
        "default": {"tile": default[0], "overlap": default[1]},
        "baseline": {"tile": base["tile"], "overlap": base["overlap"]},
        "rows": rows,
        "untiled_miou": {name: ref["miou"] for name, ref in references.items()},
        "targets": {name: {"pass": ok, "measured": text} for name, (ok, text) in targets.items()},
        "rounds": rounds,
        "quick": args.quick,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=float))
    print(f"wrote {args.out}")


def print_table(rows: list[dict], scenes: dict) -> None:
    head = ["tile", "overlap", "pixel ratio (1000/1024/2048/10000)", "s/Mpx processed", "s/Mpx scene (per scene)"]
    for name in scenes:
        head += [f"{name} disagreement edge/interior → excess", f"{name} jump edge/interior → excess"]
    head += ["sample mIoU", "ΔmIoU", "batch-8 peak MiB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        ratios = "/".join(f"{v:.2f}" for v in row["pixel_ratio"].values())
        mark = " (default)" if row["default"] else ""
        scene_s = "/".join(f"{s['s_per_scene_mpx']:.1f}" for s in row["scenes"].values())
        cells = [f"{row['tile']}{mark}", str(row["overlap"]), ratios, f"{row['s_per_processed_mpx']:.2f}", scene_s]
        for name in scenes:
            s = row["scenes"][name]["seam"]
            for kind in ("disagreement", "jump"):
                edge, interior = s["tiled"][f"edge_{kind}"], s["tiled"][f"interior_{kind}"]
                cells.append(
                    f"{edge:.4f}/{interior:.4f} = ×{s[f'{kind}_ratio']:.2f} "
                    f"(untiled ×{s[f'{kind}_reference']:.2f}) → **{s[f'{kind}_excess']:.2f}**"
                )
        cells += [
            f"{row['scenes']['sample']['miou']:.4f}",
            f"{row['miou_delta']:+.4f}",
            f"{row['batch8_peak_mib']:.0f}" if "batch8_peak_mib" in row else "–",
        ]
        print("| " + " | ".join(cells) + " |")


def check_targets(rows: list[dict], default: tuple[int, int], base: dict) -> dict[str, tuple[bool, str]]:
    """Each target: (met, the measured ratio against its bound)."""
    row = next((r for r in rows if (r["tile"], r["overlap"]) == default), None)
    if row is None:
        return {"default measured": (False, f"{default} is not among the candidates")}
    seams = [
        (name, kind, s["seam"][f"{kind}_excess"])
        for name, s in row["scenes"].items()
        for kind in ("disagreement", "jump")
    ]
    worst = max(seams, key=lambda x: x[2])
    seamless = [r for r in rows if r["overlap"] == 0]
    targets = {
        "pixel ratio": (
            row["pixel_ratio_max"] <= TARGET_RATIO,
            f"{row['pixel_ratio_max']:.3f} max over {'/'.join(row['pixel_ratio'])}² (≤ {TARGET_RATIO}; "
            f"{base['tile']}/{base['overlap']}: {base['pixel_ratio_max']:.3f})",
        ),
        "time per processed pixel": (
            row["time_vs_base"] <= TIME_NOISE,
            f"×{row['time_vs_base']:.3f} of {base['tile']}² tiles (≤ {TIME_NOISE} for noise)",
        ),
        "no seams": (
            worst[2] <= TARGET_SEAM,
            f"worst edge/interior over the untiled map's ×{worst[2]:.3f} ({worst[0]} {worst[1]}; ≤ {TARGET_SEAM})",
        ),
        "sample mIoU": (
            abs(row["miou_delta"]) <= TARGET_MIOU,
            f"{row['scenes']['sample']['miou']:.4f} vs {base['scenes']['sample']['miou']:.4f}, "
            f"Δ {row['miou_delta']:+.4f} (|Δ| ≤ {TARGET_MIOU})",
        ),
    }
    for r in seamless:
        # The control: without overlap the metric must see the seam, or "no seams" above proves nothing.
        s = r["scenes"]["sample"]["seam"]
        targets[f"control {r['tile']}/0 shows a seam"] = (
            s["jump_excess"] > TARGET_SEAM,
            f"jump excess ×{s['jump_excess']:.3f} (> {TARGET_SEAM})",
        )
    return targets


if __name__ == "__main__":
    main()
