"""Our presets against the model a CPU user would otherwise run, per 256×256 tile of the scene, alternated.

    python bench/bench_peer.py [--presets tiny,small] [--rounds 7] [--batches 1,8] [--threads N] [--quick]
                               [--out bench/results/bench_peer.json]

The peer is torchgeo's default segmentation model, segmentation_models_pytorch's `Unet("resnet18")` with 5
input bands (4 optical + 1 SAR, stacked) and 7 classes, re-implemented in `bench/unet_peer.py` (smp needs
torchvision, which does not load with our torch; see there). Its parameter count is checked against smp's
14.3 M (within 2 %); its FLOPs, like ours (`mdseg.models.cost`), are counted by torch.utils.flop_counter.

Ours is timed as `mdseg predict` runs a tile: bilinear resampling by the checkpoint's inference scale (1.0 for
the checkpoints `mdseg train` writes, so for `tiny` and `small`; 2.0 for the imported `paper` release: its
256² tiles run at 512²), `ModelPredictor` (model.predict with one seeded generator per tile, the default
DDIM steps, softmax) under torch.inference_mode, and the probabilities resampled back. The peer: forward +
softmax under torch.inference_mode. Both in eval mode, random weights, random inputs, float32, in a process
with the C allocator set as `mdseg predict` sets it (`mdseg.alloc`; MDSEG_MALLOC=system leaves it alone).

All models live in one process. A round runs, per batch size, the peer then each preset in turn, the peer again
before every preset (U-Net, tiny, U-Net, small …), so each of our calls has a peer call next to it; a burst
of load elsewhere hits both. Times are per tile (a call's time over its batch); figures are medians over
rounds, ratios ours/U-Net are taken within a round then the median (min–max shown). Batch sizes: 1 and the
default predict batch (`PredictOptions.batch_size`). Threads: torch's choice, as `mdseg predict` without
--threads. Targets, as ratios at every batch size: tiny ≤ 1.0× (aim 0.7×), small ≤ 3×.
`--quick`: 3 rounds, batch 1 only.
"""

from __future__ import annotations

import mdseg  # isort: skip  (before torch: OpenMP threads must wait passively, see mdseg/__init__)
import argparse
import inspect
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from unet_peer import UnetResNet18

import mdseg.alloc
from mdseg.checkpoint import CheckpointMeta
from mdseg.config import preset
from mdseg.engine.checkpoint_predict import ModelPredictor
from mdseg.engine.options import DEFAULT_STEPS, PredictOptions
from mdseg.models import build_model
from mdseg.models.cost import model_cost
from mdseg.release.importer import import_release_checkpoint
from mdseg.runtime import cpu_threads

PEER = "U-Net R18"
PEER_PARAMETERS = 14.3e6  # smp.Unet("resnet18", in_channels=5, classes=7)
TARGETS = {"tiny": 1.0, "small": 3.0}  # ours / U-Net per tile, at most
AIMS = {"tiny": 0.7}


@dataclass
class Contestant:
    """A model as the bench runs it: `run(b)` predicts a batch of b scene tiles; FLOPs per scene tile."""

    name: str
    run: Callable[[int], None]
    parameters: int
    gflops: float
    model_side: int  # px: the side of what the model itself sees per scene tile


def inference_scale(name: str) -> float:
    """The inference scale `mdseg predict` runs a preset's checkpoints at: the paper release's import default,
    CheckpointMeta's default (what `mdseg train` writes) for the others."""
    if name == "paper":
        return float(inspect.signature(import_release_checkpoint).parameters["inference_scale"].default)
    return float(next(f.default for f in fields(CheckpointMeta) if f.name == "inference_scale"))


def peer(tile: int, batches: tuple[int, ...]) -> Contestant:
    model = UnetResNet18(in_channels=5, classes=7).eval()
    parameters = sum(p.numel() for p in model.parameters())
    assert abs(parameters / PEER_PARAMETERS - 1) <= 0.02, f"peer has {parameters} parameters, smp's has 14.3 M"
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 5, tile, tile))
    inputs = {b: torch.randn(b, 5, tile, tile) for b in batches}

    def run(b: int) -> None:
        with torch.inference_mode():
            torch.softmax(model(inputs[b]), dim=1)

    return Contestant(PEER, run, parameters, counter.get_total_flops() / 1e9, tile)


def ours(name: str, tile: int, steps: int, batches: tuple[int, ...]) -> Contestant:
    config = preset(name)
    scale = inference_scale(name)
    side = round(tile * scale)
    model = build_model(config).eval()
    predictor = ModelPredictor(model, torch.device("cpu"))
    inputs = {
        b: (torch.randn(b, config.opt_bands, tile, tile), torch.randn(b, config.sar_bands, tile, tile)) for b in batches
    }

    def run(b: int) -> None:
        opt, sar = inputs[b]
        if scale != 1.0:  # as TileRunner resamples a tile for the predictor and its probabilities back
            opt = F.interpolate(opt, size=(side, side), mode="bilinear", align_corners=False)
            sar = F.interpolate(sar, size=(side, side), mode="bilinear", align_corners=False)
        generators = [torch.Generator().manual_seed(i) for i in range(b)]
        with torch.inference_mode():
            probs = predictor(opt, sar, generators, steps, 1)
            if scale != 1.0:
                F.interpolate(probs, size=(tile, tile), mode="bilinear", align_corners=False)

    parameters = sum(p.numel() for p in model.parameters())
    return Contestant(name, run, parameters, model_cost(config, side).gflops_total(steps), side)


def _seconds_per_tile(c: Contestant, b: int) -> float:
    start = time.perf_counter()
    c.run(b)
    return (time.perf_counter() - start) / b


def measure(unet: Contestant, presets: list[Contestant], batches: tuple[int, ...], rounds: int) -> dict:
    """Per batch size and model: per-tile seconds of each round and, for ours, the ratio to the adjacent peer call."""
    for b in batches:  # warm-up: first calls compile numba kernels and size allocator pools
        for c in (unet, *presets):
            c.run(b)
    times = {b: {c.name: [] for c in (unet, *presets)} for b in batches}
    ratios = {b: {c.name: [] for c in presets} for b in batches}
    for _ in range(rounds):
        for b in batches:
            for c in presets:
                peer_s = _seconds_per_tile(unet, b)
                ours_s = _seconds_per_tile(c, b)
                times[b][unet.name].append(peer_s)
                times[b][c.name].append(ours_s)
                ratios[b][c.name].append(ours_s / peer_s)
    return {"times": times, "ratios": ratios}


def summarise(contestants: list[Contestant], measured: dict, batches: tuple[int, ...]) -> list[dict]:
    rows = []
    for b in batches:
        for c in contestants:
            seconds = statistics.median(measured["times"][b][c.name])
            ratios = measured["ratios"][b].get(c.name)
            rows.append(
                {
                    "batch": b,
                    "model": c.name,
                    "parameters": c.parameters,
                    "model_side_px": c.model_side,
                    "gflops_per_tile": c.gflops,
                    "ms_per_tile": 1e3 * seconds,
                    "gflops_per_s": c.gflops / seconds,
                    "calls": len(measured["times"][b][c.name]),
                    "ratio": statistics.median(ratios) if ratios else None,
                    "ratio_min": min(ratios) if ratios else None,
                    "ratio_max": max(ratios) if ratios else None,
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'batch':>5} {'model':10} {'params M':>8} {'side px':>7} {'GFLOP/tile':>10} {'ms/tile':>8} "
        f"{'GFLOP/s':>8} {'×U-Net':>7} {'min–max':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ours = r["model"] != PEER
        ratio = f"{r['ratio']:.2f}" if ours else ""
        spread = f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f}" if ours else ""
        print(
            f"{r['batch']:5d} {r['model']:10} {r['parameters'] / 1e6:8.2f} {r['model_side_px']:7d} "
            f"{r['gflops_per_tile']:10.2f} {r['ms_per_tile']:8.1f} {r['gflops_per_s']:8.1f} {ratio:>7} "
            f"{spread:>11}"
        )


def targets(rows: list[dict], tile: int) -> list[dict]:
    out = []
    for r in rows:
        bound = TARGETS.get(r["model"])
        if bound is None:
            continue
        ok = r["ratio"] <= bound
        name = f"{r['model']} per {tile}² tile <= {bound:g}× U-Net (batch {r['batch']})"
        out.append({"target": name, "value": r["ratio"], "bound": bound, "pass": ok})
        aim = AIMS.get(r["model"])
        note = f" (aim {aim:g}×: {'met' if r['ratio'] <= aim else 'not met'})" if aim else ""
        print(f"{'PASS' if ok else 'FAIL'}  {name}: measured {r['ratio']:.3f}×{note}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small", help="comma-separated presets (paper: slow)")
    parser.add_argument("--tile", type=int, default=256, help="scene tile side in px")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds (medians are reported)")
    parser.add_argument("--batches", help="comma-separated tiles per call (default: 1 and predict's default)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, as mdseg predict)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, batch 1 only")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_peer.json"))
    args = parser.parse_args()
    default_batch = PredictOptions().batch_size
    batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else (1, default_batch)
    if args.quick:
        args.rounds, batches = min(args.rounds, 3), (1,)
    steps = DEFAULT_STEPS
    allocator = mdseg.alloc.configure()  # as `mdseg predict` does first thing; the peer runs under it too
    with cpu_threads(args.threads) as threads:
        torch.manual_seed(0)
        unet = peer(args.tile, batches)
        presets = [ours(name, args.tile, steps, batches) for name in args.presets.split(",")]
        load_before = os.getloadavg()[0]
        measured = measure(unet, presets, batches, args.rounds)
        load_after = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, "
        f"load average {load_before:.2f} → {load_after:.2f}; scene tile {args.tile}², float32, DDIM steps {steps}, "
        f"medians of {args.rounds} rounds, allocator {'mdseg.alloc settings' if allocator else 'as the system set it'}"
    )
    rows = summarise([unet, *presets], measured, batches)
    print_table(rows)
    checks = targets(rows, args.tile)
    meta = {
        "torch": torch.__version__,
        "threads": threads,
        "cpus": os.cpu_count(),
        "load_average": [load_before, load_after],
        "tile": args.tile,
        "steps": steps,
        "rounds": args.rounds,
        "batches": list(batches),
        "allocator": {str(k): v for k, v in allocator.items()},
        "inference_scale": {c.name: c.model_side / args.tile for c in presets},
    }
    raw = {str(b): {"seconds_per_tile": measured["times"][b], "ratios": measured["ratios"][b]} for b in batches}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "targets": checks, "rounds": raw}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
