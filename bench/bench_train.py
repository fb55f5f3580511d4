"""Training speed: iterations/s, data-loading share of the step, and peak memory, per preset and device.

    python bench/bench_train.py [--quick] [--iters 12] [--out bench/results/bench_train.json]

A synthetic dataset (`mdseg synth`: 4 training + 1 validation scenes of 512² px at 5 m) is trained on with
`mdseg.engine.train.train`, 256² crops, batch 4, one configuration per subprocess (so each peak RSS is its own):
`tiny` and `small` on CPU (and on CUDA when present), each with 2 DataLoader workers and, as the same-run
baseline, with loading in the main process (0 workers). The first two iterations (JIT, allocator warm-up) are
left out. Reported: it/s (1 / median step), the share of step time spent waiting for data (target < 10 % with 2
workers), and peak RSS (CPU) or peak CUDA memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import mdseg  # noqa: F401  # isort: skip  (before torch: sets OMP_WAIT_POLICY, see mdseg/__init__.py)
import numpy as np
import torch

WARMUP = 2


def run_one(data: str, preset: str, device: str, workers: int, iters: int, out: str) -> dict:
    """One training run in this process; its per-iteration timings and peak memory."""
    from mdseg.engine.train import TrainSettings, train

    settings = TrainSettings(
        data=data,
        out=out,
        model=preset,
        iters=iters,
        batch_size=4,
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
        "workers": workers,
        "iterations_timed": int(step.size),
        "it_per_s": float(1 / np.median(step)),
        "step_s_median": float(np.median(step)),
        "data_share": float(wait.sum() / step.sum()),
        "peak_mib": float(peak),
        "peak_kind": "cuda allocated" if device.startswith("cuda") else "process RSS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=12, help="iterations per configuration (first 2 not timed)")
    parser.add_argument("--quick", action="store_true", help="tiny only, 8 iterations")
    parser.add_argument("--out", default="bench/results/bench_train.json")
    parser.add_argument(
        "--child", nargs=5, metavar=("DATA", "PRESET", "DEVICE", "WORKERS", "ITERS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.child:
        data, preset, device, workers, iters = args.child
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_one(data, preset, device, int(workers), int(iters), f"{tmp}/run")))
        return

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
                    cmd = [sys.executable, __file__, "--child", str(data), preset, device, str(workers), str(iters)]
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
