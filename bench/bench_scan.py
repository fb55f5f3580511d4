"""Selective-scan benchmark at the SS2D shapes of a 256×256 tile.

    python bench/bench_scan.py [--quick] [--repeats 5] [--out bench/results/bench_scan.json]

Times forward and forward+backward of every scan backend available here (reference, torch, cpu, cuda when a
CUDA device is visible) and of mambapy's parallel scan (`mambapy.pscan.pscan`, the pure-PyTorch peer), at
b = 4 (four scan directions, batch 1), ungrouped B/C (b, n, l), softplus on, delta_bias and D, no z, float32,
for (d, l) in (256, 4096), (512, 1024), (1024, 256), (2048, 64) and n in {1, 16}. `--quick` runs (256, 4096) only.

Each figure is the median of up to `--repeats` timed runs after one warm-up run (numba compiles on its first
call); runs stop early once they add up to `--budget` seconds, and a figure whose warm-up alone takes longer is
that single run (the slow PyTorch paths at n = 16). The table gives the run count.
Speed-ups are over `reference` in the same run. GB/s counts the bytes of u, delta, B, C and out, each read or
written once, divided by the time (the same byte count for forward+backward, so it is comparable, not physical).
The JSON also keeps each figure's minimum. Targets, evaluated at (d, l) = (256, 4096) on the ratio of medians
(the ratio of minimums is printed too: on a shared machine other processes' load slows the parallel `cpu`
kernel more than the single-threaded Python loop of the reference): `cpu` forward >= 30x `reference` at n = 1
and >= 50x at n = 16; `cpu` forward+backward >= 2x faster than mambapy at n = 1 and n = 16.
"""

from __future__ import annotations

# mdseg before torch: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads only when torch loads it; with torch
# first, torch's and numba's idle threads spin against each other and every timing here is noise.
import mdseg  # noqa: F401  # isort: skip
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from mdseg.kernels import backend_status, selective_scan

BATCH = 4
SHAPES = [(256, 4096), (512, 1024), (1024, 256), (2048, 64)]
STATE_SIZES = (1, 16)
TARGET_SHAPE = SHAPES[0]
GRAD_INPUTS = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def make_inputs(d: int, length: int, n: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Mamba-like float32 inputs: S4D-real A = -(1..n), dt = softplus(delta + bias) spread over [1e-3, 1e-1]."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.empty(d).uniform_(math.log(1e-3), math.log(1e-1), generator=gen))
    inputs = {
        "u": torch.randn(BATCH, d, length, generator=gen),
        "delta": 0.5 * torch.randn(BATCH, d, length, generator=gen),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        "B": torch.randn(BATCH, n, length, generator=gen),
        "C": torch.randn(BATCH, n, length, generator=gen),
        "D": torch.ones(d),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus of dt
    }
    return {k: v.to(device) for k, v in inputs.items()}


def _mdseg_scan(backend: str) -> Callable[..., torch.Tensor]:
    def scan(u, delta, A, B, C, D, delta_bias):
        return selective_scan(u, delta, A, B, C, D, None, delta_bias, delta_softplus=True, backend=backend)

    return scan


def _mambapy_scan() -> Callable[..., torch.Tensor] | None:
    """The same selective scan built on mambapy's Blelloch pscan, preparation (exp, products) included."""
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def scan(u, delta, A, B, C, D, delta_bias):
        dt = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)  # (b, l, d)
        x = u.transpose(1, 2)  # (b, l, d)
        delta_a = torch.exp(dt.unsqueeze(-1) * A)  # (b, l, d, n)
        bx = (dt * x).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)  # (b, l, d, n)
        hs = pscan(delta_a, bx)  # (b, l, d, n)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1)  # (b, l, d)
        return (y + D * x).transpose(1, 2)

    return scan


def candidates() -> dict[str, tuple[Callable[..., torch.Tensor], str]]:
    """name -> (scan function, device) for everything that runs on this machine."""
    found = {}
    for status in backend_status():
        if status.available:
            device = "cuda" if status.name == "cuda" else "cpu"
            found[status.name] = (_mdseg_scan(status.name), device)
    peer = _mambapy_scan()
    if peer is not None:
        found["mambapy"] = (peer, "cpu")
    return found


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], runs: int, budget_s: float, device: str) -> tuple[float, float, int, object]:
    """(median seconds, minimum seconds, runs timed, the warm-up's result): one warm-up, then up to `runs` calls
    or until they sum to `budget_s`; a warm-up longer than `budget_s` is the single timed run."""

    def timed() -> tuple[float, object]:
        start = time.perf_counter()
        result = fn()
        _sync(device)
        return time.perf_counter() - start, result

    warmup, first = timed()
    if warmup > budget_s:
        return warmup, warmup, 1, first
    times: list[float] = []
    while len(times) < runs and sum(times) < budget_s:
        times.append(timed()[0])
    return statistics.median(times), min(times), len(times), first


def measure(name: str, scan, device: str, inputs: dict, repeats: int, budget_s: float) -> dict:
    leaves = {k: v.detach().clone().requires_grad_(k in GRAD_INPUTS) for k, v in inputs.items()}
    grad_out = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(1)).to(device)

    def forward():
        with torch.no_grad():
            return scan(**inputs)

    def forward_backward():
        for t in leaves.values():
            t.grad = None
        scan(**leaves).backward(grad_out)

    _, d, length = inputs["u"].shape
    forward_s, forward_min_s, forward_runs, out = _time(forward, repeats, budget_s, device)
    result = {"out": out.float().cpu(), "forward_s": forward_s, "forward_min_s": forward_min_s}
    result["forward_runs"] = forward_runs
    fb_s, fb_min_s, fb_runs, _ = _time(forward_backward, repeats, budget_s, device)
    return {**result, "forward_backward_s": fb_s, "forward_backward_min_s": fb_min_s, "forward_backward_runs": fb_runs}


def run(quick: bool, repeats: int, budget_s: float) -> dict:
    shapes = [TARGET_SHAPE] if quick else SHAPES
    found = candidates()
    rows = []
    for d, length in shapes:
        for n in STATE_SIZES:
            moved = {}
            ref_row = None
            for name, (scan, device) in found.items():
                if device not in moved:
                    moved[device] = make_inputs(d, length, n, device)
                result = measure(name, scan, device, moved[device], repeats, budget_s)
                out = result.pop("out")
                if name == "reference":
                    ref_row, ref_out = result, out
                nbytes = 4 * (3 * BATCH * d * length + 2 * BATCH * n * length)
                row = {
                    "backend": name,
                    "device": device,
                    "b": BATCH,
                    "d": d,
                    "l": length,
                    "n": n,
                    **result,
                    "forward_gbps": nbytes / result["forward_s"] / 1e9,
                    "forward_backward_gbps": _ratio(nbytes / 1e9, result["forward_backward_s"]),
                }
                if ref_row is not None:
                    scale = max(1.0, ref_out.abs().max().item())
                    row["max_err_vs_reference"] = (out - ref_out).abs().max().item() / scale
                    row["forward_speedup"] = ref_row["forward_s"] / result["forward_s"]
                    row["forward_backward_speedup"] = _ratio(
                        ref_row["forward_backward_s"], result["forward_backward_s"]
                    )
                rows.append(row)
                print(f"  {name:9s} d={d:5d} l={length:5d} n={n:2d}  fwd {_ms(result['forward_s']):>10s} ms"
                      f"  fwd+bwd {_ms(result['forward_backward_s']):>10s} ms", flush=True)  # fmt: skip
    return {"rows": rows, "targets": evaluate_targets(rows)}


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None else num / den


def _ms(seconds: float | None) -> str:
    return "skipped" if seconds is None else f"{seconds * 1e3:.2f}"


def _row(rows: list[dict], backend: str, n: int) -> dict | None:
    d, length = TARGET_SHAPE
    return next((r for r in rows if (r["backend"], r["d"], r["l"], r["n"]) == (backend, d, length, n)), None)


def _target(rows: list[dict], text: str, baseline: str, n: int, what: str, minimum: float) -> dict:
    """Speed of `cpu` over `baseline` at TARGET_SHAPE: the ratio of medians decides, that of minimums is shown."""
    cpu, base = _row(rows, "cpu", n), _row(rows, baseline, n)
    found = cpu is not None and base is not None
    return {
        "target": text,
        "ratio": base[f"{what}_s"] / cpu[f"{what}_s"] if found else None,
        "ratio_of_minimums": base[f"{what}_min_s"] / cpu[f"{what}_min_s"] if found else None,
        "min": minimum,
    }


def evaluate_targets(rows: list[dict]) -> list[dict]:
    targets = []
    for n, minimum in ((1, 30.0), (16, 50.0)):
        text = f"cpu forward >= {minimum:g}x reference, n={n}"
        targets.append(_target(rows, text, "reference", n, "forward", minimum))
    for n in (1, 16):
        targets.append(
            _target(rows, f"cpu forward+backward >= 2x faster than mambapy, n={n}", "mambapy", n, "forward_backward", 2)
        )
    for t in targets:
        t["result"] = "n/a" if t["ratio"] is None else ("PASS" if t["ratio"] >= t["min"] else "FAIL")
    return targets


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        info["numba"] = None
    return info


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict, console: Console) -> None:
    table = Table(title="selective scan, float32, b=4, softplus + delta_bias + D, no z; times are medians")
    for col in ("backend", "d", "l", "n", "fwd ms", "runs", "fwd ×ref", "fwd GB/s"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for col in ("fwd+bwd ms", "runs", "f+b ×ref", "f+b GB/s", "err vs ref"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        table.add_row(
            r["backend"],
            str(r["d"]),
            str(r["l"]),
            str(r["n"]),
            _ms(r["forward_s"]),
            str(r["forward_runs"]),
            _fmt(r.get("forward_speedup"), ".1f"),
            f"{r['forward_gbps']:.2f}",
            _ms(r["forward_backward_s"]),
            str(r["forward_backward_runs"]),
            _fmt(r.get("forward_backward_speedup"), ".1f"),
            _fmt(r["forward_backward_gbps"], ".2f"),
            _fmt(r.get("max_err_vs_reference"), ".1e"),
        )
    console.print(table)
    console.print(
        f"runs: timed runs after one warm-up (up to {report['settings']['repeats']}, stopping at "
        f"{report['settings']['budget_s']:g} s; 1 = the warm-up itself took longer). "
        "err vs ref: max |out - ref| / max(1, max |ref|). GB/s: u, delta, B, C, out once / time."
    )
    for t in report["targets"]:
        colour = {"PASS": "green", "FAIL": "red"}.get(t["result"], "yellow")
        console.print(
            f"[{colour}]{t['result']}[/] {t['target']}: measured {_fmt(t['ratio'], '.1f')}x "
            f"(ratio of medians; of minimums {_fmt(t['ratio_of_minimums'], '.1f')}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the (d=256, l=4096) shape")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure after one warm-up (default 5)")
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds of timed runs per figure before stopping early (default 10)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_scan.json"), help="JSON report path")
    args = parser.parse_args()

    # Wide enough for the table when the output is piped to a file.
    console = Console(width=None if sys.stdout.isatty() else 160)
    info = machine()
    console.print(
        f"torch {info['torch']}, {info['torch_threads']} torch threads, numba threads {info.get('numba_threads')}, "
        f"{info['cpu_count']} CPUs, load average {info['load_average_1min_at_start']:.2f}, CUDA: {info['cuda']}"
    )
    report = {
        "machine": info,
        "settings": {"quick": args.quick, "repeats": args.repeats, "budget_s": args.budget, "batch": BATCH},
    }
    report.update(run(args.quick, args.repeats, args.budget))
    print_report(report, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
