"""Training speed: iterations/s, data-loading share of the step, and peak memory, per preset and device.

    python bench/bench_train.py [--quick] [--iters 12] [--out bench/results/bench_train.json]

A synthetic dataset (`mdseg synth`: 4 training + 1 validation scenes of 512² px at 5 m) is trained on with
`mdseg.engine.train.train`, 256² crops, batch 4, one configuration per subprocess (so each peak RSS is its own):
`tiny` and `small` on CPU (and on CUDA when present), each with 2 DataLoader workers and, as the same-run
baseline, with loading in the main process (0 workers). The first two iterations (JIT, allocator warm-up) are
left out. Reported: it/s (1 / median step), the share of step time spent waiting for data (target < 10 % with 2
workers), and peak RSS (CPU) or peak CUDA memory.

    python bench/bench_train.py --checkpointing [--rounds 2] [--iters 8] [--paper] [--no-small] [--malloc mdseg]

compares training with and without `--checkpoint-activations` on CPU: `tiny` at batch 4 and `small` at batch 2
(with `--paper` also `paper` at batch 1), 256² crops, 2 workers, each setting in a fresh subprocess, off and on
alternated for `--rounds` rounds; `--malloc system` keeps glibc's defaults (a library call), `mdseg` applies
`mdseg.alloc` first, as the `mdseg train` command does. Reported: median seconds per step, peak RSS of the training
process, their on/off ratios (target for `tiny`: peak ≤ 60 % of off), and, per preset, autograd's saved-tensor
accounting of one batch-1 forward (what backward keeps: all of it without checkpointing; with it, everything
outside the blocks, the blocks' inputs and one block's activations being recomputed), the basis of the GPU
estimates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import mdseg  # noqa: F401  # isort: skip  (before torch: sets OMP_WAIT_POLICY, see mdseg/__init__.py)
import numpy as np
import torch
from torch import nn

WARMUP = 2


def run_one(
    data: str, preset: str, device: str, workers: int, iters: int, out: str, batch: int = 4, checkpointed: bool = False
) -> dict:
    """One training run in this process; its per-iteration timings and peak memory."""
    from mdseg.engine.train import TrainSettings, train

    settings = TrainSettings(
        data=data,
        out=out,
        model=preset,
        iters=iters,
        batch_size=batch,
        checkpoint_activations=checkpointed,
        crop=256,
        workers=workers,
        log_every=1,
        val_every=10**9,  # no validation inside the timed run (it is predict, not training)
        save_every=10**9,
        device=device,
    )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = train(settings, progress=False)
    steps = [r for r in result.history if "step_time" in r][WARMUP:]
    step = np.array([r["step_time"] for r in steps])
    wait = np.array([r["data_wait"] for r in steps])
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "preset": preset,
        "device": device,
        "batch": batch,
        "checkpointed": checkpointed,
        "workers": workers,
        "iterations_timed": int(step.size),
        "it_per_s": float(1 / np.median(step)),
        "step_s_median": float(np.median(step)),
        "data_share": float(wait.sum() / step.sum()),
        "peak_mib": float(peak),
        "peak_kind": "cuda allocated" if device.startswith("cuda") else "process RSS",
    }


def saved_tensors(preset: str, crop: int = 256) -> dict:
    """Autograd's saved tensors for one batch-1 training forward of `preset` (no checkpointing), in MiB: the
    total, the checkpointable blocks' (VSS, DCF, DS-S4, neck, denoiser layers) own and their inputs, the largest.

    With checkpointing, backward keeps total − blocks + block inputs, plus one block's recomputed activations
    at a time (the largest, at worst). Every figure scales with the batch.
    """
    from mdseg.models import build_model
    from mdseg.models.backbone import FusedStage
    from mdseg.models.diffusion_head import Denoiser

    torch.manual_seed(0)
    model = build_model(preset, 4, 1, 7).train()
    blocks = [model.neck] + [
        m
        for part in model.modules()
        if isinstance(part, FusedStage | Denoiser)
        for m in part.children()
        if isinstance(m, nn.ModuleList)
        for m in m
    ]
    current: list[int] = []  # index of the block running now (blocks do not nest)
    per_block = [0] * len(blocks)
    inputs = [0] * len(blocks)
    seen: set[int] = set()
    outside = 0

    def enter(i: int):
        def hook(module, args):
            flat = [t for a in args for t in (a if isinstance(a, list) else [a])]  # the neck takes a list
            inputs[i] += sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))
            current.append(i)

        return hook

    def leave(module, args, out) -> None:
        current.pop()

    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(enter(i))
        block.register_forward_hook(leave)

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal outside
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:  # a view of a kept tensor costs nothing more
            seen.add(storage.data_ptr())
            if current:
                per_block[current[-1]] += storage.nbytes()
            else:
                outside += storage.nbytes()
        return t

    opt, sar = torch.randn(1, 4, crop, crop), torch.randn(1, 1, crop, crop)
    label = torch.randint(0, 7, (1, crop, crop))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(opt, sar, label)
    mib = 2**-20
    params = sum(p.numel() for p in model.parameters())
    return {
        "preset": preset,
        "crop": crop,
        "params_m": params / 1e6,
        "saved_mib": (outside + sum(per_block)) * mib,
        "outside_blocks_mib": outside * mib,
        "block_inputs_mib": sum(inputs) * mib,
        "largest_block_mib": max(per_block) * mib,
        "checkpointed_mib": (outside + sum(inputs) + max(per_block)) * mib,
    }


def checkpointing(args: argparse.Namespace) -> None:
    """Time and peak RSS with and without activation checkpointing, alternated in fresh subprocesses."""
    settings = [("tiny", 4)] + ([("small", 2)] if args.small else []) + ([("paper", 1)] if args.paper else [])
    env = {**os.environ, "MDSEG_MALLOC": args.malloc}  # read by the child (`run_checkpointing_child`)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from mdseg.synth import synthesize_dataset

        data = synthesize_dataset(Path(tmp) / "synth", scenes=5, val=1, size=512, seed=4242).root
        for preset, batch in settings:
            for round_ in range(args.rounds):
                for checkpointed in (False, True) if round_ % 2 == 0 else (True, False):
                    child = [str(data), preset, "cpu", "2", str(args.iters), str(batch), str(int(checkpointed))]
                    cmd = [sys.executable, __file__, "--child", *child]
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                    if done.returncode != 0:
                        sys.exit(f"{preset} batch {batch} checkpointed={checkpointed} failed:\n{done.stderr[-3000:]}")
                    rows.append(
                        json.loads(done.stdout.strip().splitlines()[-1]) | {"round": round_, "malloc": args.malloc}
                    )
                    r = rows[-1]
                    print(
                        f"  {preset} b{batch} {'on ' if checkpointed else 'off'} round {round_}: "
                        f"{r['step_s_median']:.2f} s/step, peak {r['peak_mib']:.0f} MiB",
                        file=sys.stderr,
                    )
            cmd = [sys.executable, __file__, "--saved", preset]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"saved-tensor accounting of {preset} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"kind": "saved_tensors"})

    summary = []
    header = (
        f"{'preset':6s} {'batch':>5s} {'ckpt':>4s} {'s/step':>7s} {'peak MiB':>9s} "
        f"{'time on/off':>11s} {'peak on/off':>11s}"
    )
    print(header)
    print("-" * len(header))
    for preset, batch in settings:
        runs = [r for r in rows if r.get("preset") == preset and r.get("batch") == batch and "round" in r]
        med = {
            on: (
                float(np.median([r["step_s_median"] for r in runs if r["checkpointed"] == on])),
                float(np.median([r["peak_mib"] for r in runs if r["checkpointed"] == on])),
            )
            for on in (False, True)
        }
        time_ratio, peak_ratio = med[True][0] / med[False][0], med[True][1] / med[False][1]
        for on in (False, True):
            ratios = f"{time_ratio:11.2f} {peak_ratio:11.2f}" if on else ""
            print(f"{preset:6s} {batch:5d} {'on' if on else 'off':>4s} {med[on][0]:7.2f} {med[on][1]:9.0f} {ratios}")
        summary.append(
            {
                "preset": preset,
                "batch": batch,
                "step_s_off": med[False][0],
                "step_s_on": med[True][0],
                "peak_mib_off": med[False][1],
                "peak_mib_on": med[True][1],
                "time_ratio": time_ratio,
                "peak_ratio": peak_ratio,
            }
        )
    tiny = summary[0]
    verdict = "met" if tiny["peak_ratio"] <= 0.60 else "NOT met"
    print(
        f"tiny batch 4: peak RSS with checkpointing {100 * tiny['peak_ratio']:.0f} % of without "
        f"(target ≤ 60 %: {verdict})"
    )
    print("saved tensors of one batch-1 forward, 256² (MiB): total / outside blocks / block inputs / largest block")
    for r in (r for r in rows if r.get("kind") == "saved_tensors"):
        print(
            f"  {r['preset']:6s} {r['params_m']:6.1f} M params: {r['saved_mib']:8.0f} / "
            f"{r['outside_blocks_mib']:6.0f} / {r['block_inputs_mib']:5.0f} / {r['largest_block_mib']:5.0f}; "
            f"with checkpointing ≤ {r['checkpointed_mib']:.0f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.machine(),
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "malloc": args.malloc,
    }
    out.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=12, help="iterations per configuration (first 2 not timed)")
    parser.add_argument("--quick", action="store_true", help="tiny only, 8 iterations")
    parser.add_argument("--out", default=None, help="JSON results [bench/results/bench_train[_checkpointing].json]")
    parser.add_argument("--checkpointing", action="store_true", help="with vs without --checkpoint-activations")
    parser.add_argument("--rounds", type=int, default=2, help="--checkpointing: alternated off/on rounds")
    parser.add_argument("--paper", action="store_true", help="--checkpointing: also `paper` at batch 1 (slow)")
    parser.add_argument(
        "--small", action=argparse.BooleanOptionalAction, default=True, help="--checkpointing: `small` at batch 2"
    )
    parser.add_argument(
        "--malloc", choices=("mdseg", "system"), default="mdseg", help="--checkpointing: allocator settings [mdseg]"
    )
    parser.add_argument(
        "--child",
        nargs=7,
        metavar=("DATA", "PRESET", "DEVICE", "WORKERS", "ITERS", "BATCH", "CHECKPOINTED"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--saved", metavar="PRESET", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if "MDSEG_MALLOC" in os.environ:  # set by --checkpointing: allocate as `mdseg train` (or glibc's defaults)
            from mdseg import alloc

            alloc.configure()
        data, preset, device, workers, iters, batch, checkpointed = args.child
        with tempfile.TemporaryDirectory() as tmp:
            run = run_one(data, preset, device, int(workers), int(iters), f"{tmp}/run", int(batch), checkpointed == "1")
            print(json.dumps(run))
        return
    if args.saved:
        print(json.dumps(saved_tensors(args.saved)))
        return
    if args.checkpointing:
        args.out = args.out or "bench/results/bench_train_checkpointing.json"
        checkpointing(args)
        return
    args.out = args.out or "bench/results/bench_train.json"

    presets = ["tiny"] if args.quick else ["tiny", "small"]
    iters = 8 if args.quick else args.iters
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from mdseg.synth import synthesize_dataset

        data = synthesize_dataset(Path(tmp) / "synth", scenes=5, val=1, size=512, seed=4242).root
        for device in devices:
            for preset in presets:
                for workers in (2, 0):
                    child = [str(data), preset, device, str(workers), str(iters), "4", "0"]
                    cmd = [sys.executable, __file__, "--child", *child]
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        sys.exit(f"{preset} on {device} with {workers} workers failed:\n{done.stderr[-3000:]}")
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    r = rows[-1]
                    print(f"  {preset:5s} {device:4s} workers {workers}: {r['it_per_s']:.2f} it/s", file=sys.stderr)

    header = f"{'preset':6s} {'device':6s} {'workers':>7s} {'it/s':>7s} {'step s':>7s} {'data %':>7s} {'peak MiB':>9s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['preset']:6s} {r['device']:6s} {r['workers']:7d} {r['it_per_s']:7.2f} {r['step_s_median']:7.2f} "
            f"{100 * r['data_share']:6.1f}% {r['peak_mib']:9.0f}"
        )
    for device in devices:
        for preset in presets:
            two, zero = (
                next(r for r in rows if (r["preset"], r["device"], r["workers"]) == (preset, device, w)) for w in (2, 0)
            )
            verdict = "met" if two["data_share"] < 0.10 else "NOT met"
            print(
                f"{preset} on {device}: data wait {100 * two['data_share']:.1f}% of the step with 2 workers "
                f"(target < 10 %: {verdict}); 2 workers vs 0: {two['it_per_s'] / zero['it_per_s']:.2f}× it/s"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "cpus": torch.get_num_threads(), "torch": torch.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
