"""GPU benchmark: the SS2D scan per backend, whole-model tiles/s, and a training step, in one run.

    python bench/bench_gpu.py [--quick] [--no-compile] [--repeats 20] [--batch 8]
                              [--out bench/results/bench_gpu.json]

Needs a CUDA device; without one it says so and exits (status 2). Three parts, so every ratio compares figures
taken on the same GPU in the same run:

1. SS2D scan, `ss2d_scan` as the model calls it: forward and forward+backward for `triton` (the fused
   kernels), `cuda` (mamba-ssm's kernel on the cross-scanned sequences; only when mamba-ssm imports) and
   `torch` (the PyTorch path), at the four encoder stages' shapes of `paper` (d_inner 256…2048, d_state 1)
   for a 256² and a 512² tile, `--batch` tiles, float32 and bfloat16 inputs. Speed-up over `torch`; the
   largest error against `torch` (float32 inputs), relative to max(1, max |torch|).
2. Model: `predict` tiles/s for `paper` and `small` on 256² tiles (`--batch` per call, random weights),
   float32 vs bf16 autocast, eager vs compiled (`mdseg.engine.accel.prepare_model`), DDIM steps 1 and 3. The
   first compiled call's time (compilation) is reported on its own.
3. Training: `forward_train` + backward + AdamW step for `paper`, batch 8, 256² crops, random data (the model's
   cost without data loading): iterations/s and peak allocated memory, float32 vs bf16 (and bf16 compiled).

Times are medians of `--repeats` runs (fewer for training and for slow figures, see the JSON) after warm-up
runs, each bracketed by torch.cuda.synchronize. `--quick`: the 256² tile only, `small` only, steps 3 only,
no compile. An out-of-memory figure is recorded as such and the run goes on.
"""

from __future__ import annotations

import mdseg  # noqa: F401  # isort: skip  (before torch: OpenMP threads must wait passively, see mdseg/__init__)
import argparse
import importlib.metadata
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from mdseg.config import preset
from mdseg.engine.accel import autocast, prepare_model
from mdseg.kernels import ss2d_scan
from mdseg.kernels.backends import mamba_ssm_problem, triton_problem
from mdseg.models import build_model

TILES = (256, 512)
STRIDES = (4, 8, 16, 32)
GRAD_INPUTS = (0, 1, 3, 4)  # u, delta, B, C (the activations); A, D, delta_bias are float32 weights
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2, budget_s: float = 20.0):
    """(median seconds, runs) of `fn` after `warmup` calls; stops early once the timed runs add up to `budget_s`."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget_s:
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def _out_of_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"error": "out of memory"}


def scan_backends(device: torch.device) -> dict[str, str]:
    """name -> why it runs (or is skipped) on `device`."""
    found = {"torch": "PyTorch path"}
    problem = triton_problem(device)
    found["triton"] = "fused Triton kernels" if problem is None else f"skipped: {problem}"
    problem = mamba_ssm_problem()
    found["cuda"] = "mamba-ssm" if problem is None and device.type == "cuda" else f"skipped: {problem or 'no CUDA'}"
    return found


def ss2d_inputs(batch: int, d: int, h: int, w: int, dtype: torch.dtype, device: torch.device) -> list:
    """Model-like SS2D inputs: A = -1 (A_log = 0, d_state 1), D = 1, dt = softplus(delta + bias) around
    [1e-3, 0.1]; u, delta, B, C in `dtype`, the weights float32."""
    gen = torch.Generator().manual_seed(0)
    length = h * w
    dt = torch.exp(torch.empty(4 * d).uniform_(math.log(1e-3), math.log(1e-1), generator=gen))
    tensors = [
        torch.randn(batch, d, h, w, generator=gen).to(dtype),
        (0.5 * torch.randn(batch, 4, d, length, generator=gen)).to(dtype),
        -torch.ones(4 * d, 1),
        torch.randn(batch, 4, 1, length, generator=gen).to(dtype),
        torch.randn(batch, 4, 1, length, generator=gen).to(dtype),
        torch.ones(4 * d),
        dt + torch.log(-torch.expm1(-dt)),
    ]
    return [t.to(device) for t in tensors]


def bench_scan(device: torch.device, tiles, batch: int, repeats: int, backends: dict[str, str]) -> list[dict]:
    """Part 1: one row per (tile, stage, dtype, backend)."""
    config = preset("paper")
    rows = []
    for tile in tiles:
        for stage, (dim, stride) in enumerate(zip(config.stage_dims, STRIDES, strict=True)):
            d, side = int(config.ssm_ratio * dim), tile // stride
            for dtype_name, dtype in DTYPES.items():
                inputs = ss2d_inputs(batch, d, side, side, dtype, device)
                baseline = None
                for name, why in backends.items():
                    if why.startswith("skipped"):
                        continue
                    row = {"tile": tile, "stage": stage + 1, "b": batch, "d": d, "h": side, "w": side}
                    row |= {"dtype": dtype_name, "backend": name}
                    try:
                        row |= _scan_figures(name, inputs, device, repeats)
                    except torch.cuda.OutOfMemoryError:
                        row |= _out_of_memory(device)
                    out = row.pop("out", None)
                    if name == "torch" and out is not None:
                        baseline = (out, row)
                    if baseline is not None and out is not None and "error" not in baseline[1]:
                        ref, ref_row = baseline
                        row["forward_speedup"] = ref_row["forward_ms"] / row["forward_ms"]
                        row["forward_backward_speedup"] = ref_row["forward_backward_ms"] / row["forward_backward_ms"]
                        if dtype == torch.float32:
                            row["max_err_vs_torch"] = ((out - ref).abs().max() / ref.abs().max().clamp(min=1)).item()
                    rows.append(row)
                    print(f"  scan {tile}² stage {stage + 1} {dtype_name} {name:6s} {_fmt_row(row)}", flush=True)
                del inputs
    return rows


def _scan_figures(backend: str, inputs: list, device: torch.device, repeats: int) -> dict:
    leaves = [t.detach().clone().requires_grad_(i in GRAD_INPUTS) for i, t in enumerate(inputs)]
    grad_out = torch.randn(inputs[0].shape[0], inputs[0].shape[1], inputs[1].shape[-1], device=device)
    grad_out = grad_out.to(inputs[0].dtype)

    def forward():
        with torch.no_grad():
            return ss2d_scan(*inputs, delta_softplus=True, backend=backend)

    def forward_backward():
        for t in leaves:
            t.grad = None
        ss2d_scan(*leaves, delta_softplus=True, backend=backend).backward(grad_out)

    out = forward().float()
    fwd, fwd_runs = timed(forward, device, repeats)
    fb, fb_runs = timed(forward_backward, device, repeats)
    return {
        "out": out,
        "forward_ms": fwd * 1e3,
        "forward_runs": fwd_runs,
        "forward_backward_ms": fb * 1e3,
        "forward_backward_runs": fb_runs,
    }


def _fmt_row(row: dict) -> str:
    if "error" in row:
        return row["error"]
    return f"fwd {row['forward_ms']:.3f} ms, fwd+bwd {row['forward_backward_ms']:.3f} ms"


def _tiles(batch: int, tile: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    opt = torch.randn(batch, 4, tile, tile, generator=gen)
    sar = torch.randn(batch, 1, tile, tile, generator=gen)
    return opt.to(device), sar.to(device)


def bench_model(device, presets, amps, compiles, steps_list, batch: int, repeats: int) -> list[dict]:
    """Part 2: one row per (preset, compile, amp, steps)."""
    rows = []
    opt, sar = _tiles(batch, 256, device)
    for name in presets:
        for compiled in compiles:
            torch.manual_seed(0)
            model = build_model(name, opt_bands=4, sar_bands=1, num_classes=7).to(device).eval()
            prepare_model(model, device, compile=compiled)
            for amp in amps:
                for steps in steps_list:
                    row = {"preset": name, "compile": compiled, "amp": amp, "steps": steps, "batch": batch, "tile": 256}
                    try:
                        row |= _model_figures(model, opt, sar, amp, steps, device, repeats)
                    except torch.cuda.OutOfMemoryError:
                        row |= _out_of_memory(device)
                    rows.append(row)
                    print(f"  model {name} compile={compiled} amp={amp} steps={steps}: "
                          f"{row.get('tiles_per_s', 0):.1f} tiles/s", flush=True)  # fmt: skip
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _model_figures(model, opt, sar, amp: str, steps: int, device: torch.device, repeats: int) -> dict:
    def predict():
        gens = [torch.Generator(device=device).manual_seed(i) for i in range(opt.shape[0])]
        with torch.inference_mode(), autocast(device, amp):
            return model.predict(opt, sar, steps=steps, generator=gens)

    start = time.perf_counter()
    predict()
    _sync(device)
    first = time.perf_counter() - start
    seconds, runs = timed(predict, device, repeats, warmup=1)
    return {"first_call_s": first, "seconds": seconds, "runs": runs, "tiles_per_s": opt.shape[0] / seconds}


def bench_train(device, variants, batch: int, iters: int, name: str = "paper") -> list[dict]:
    """Part 3: one row per (amp, compile) variant of preset `name`, 256² crops."""
    rows = []
    opt, sar = _tiles(batch, 256, device)
    label = torch.randint(0, 7, (batch, 256, 256), generator=torch.Generator().manual_seed(2)).to(device)
    for amp, compiled in variants:
        row = {"preset": name, "amp": amp, "compile": compiled, "batch": batch, "crop": 256}
        try:
            row |= _train_figures(name, opt, sar, label, amp, compiled, device, iters)
        except torch.cuda.OutOfMemoryError:
            row |= _out_of_memory(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the variant's model and optimizer state are gone with its frame
        rows.append(row)
        print(f"  train {name} amp={amp} compile={compiled}: {row.get('it_per_s', 0):.2f} it/s, "
              f"peak {row.get('peak_gib', 0):.1f} GiB", flush=True)  # fmt: skip
    return rows


def _train_figures(name, opt, sar, label, amp: str, compiled: bool, device: torch.device, iters: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, opt_bands=4, sar_bands=1, num_classes=7).to(device).train()
    prepare_model(model, device, compile=compiled)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = model(opt, sar, label)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    start = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, runs = timed(step, device, iters, warmup=2, budget_s=120.0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return {"first_step_s": first, "seconds": seconds, "runs": runs, "it_per_s": 1 / seconds, "peak_gib": peak / 2**30}


def comparisons(report: dict) -> list[str]:
    """The run's headline ratios, as sentences."""
    lines = []
    for row in report["scan"]:
        if row["backend"] != "torch" and "forward_speedup" in row and row["stage"] == 1:
            lines.append(
                f"scan {row['tile']}² stage 1 {row['dtype']}: {row['backend']} {row['forward_speedup']:.1f}x torch "
                f"forward, {row['forward_backward_speedup']:.1f}x forward+backward"
            )
    model = {(r["preset"], r["compile"], r["amp"], r["steps"]): r for r in report["model"] if "tiles_per_s" in r}
    for (name, compiled, amp, steps), row in model.items():
        base = model.get((name, False, "off", steps))
        if base is not None and (compiled, amp) != (False, "off"):
            label = f"{amp}{' + compile' if compiled else ''}"
            lines.append(
                f"model {name} steps {steps}: {label} {row['tiles_per_s'] / base['tiles_per_s']:.2f}x fp32 eager"
            )
    train = {(r["amp"], r["compile"]): r for r in report["train"] if "it_per_s" in r}
    base = train.get(("off", False))
    for (amp, compiled), row in train.items():
        if base is not None and (amp, compiled) != ("off", False):
            lines.append(
                f"train paper {amp}{' + compile' if compiled else ''}: {row['it_per_s'] / base['it_per_s']:.2f}x "
                f"fp32 it/s, peak memory {row['peak_gib']:.1f} vs {base['peak_gib']:.1f} GiB"
            )
    return lines


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict, console: Console) -> None:
    table = Table(title="ss2d_scan (medians, ms); speed-up and error vs torch in the same run")
    for col in ("tile", "stage", "b×d×h×w", "dtype", "backend", "fwd", "×torch", "fwd+bwd", "×torch", "err"):
        table.add_column(col, justify="left" if col in ("dtype", "backend") else "right")
    for r in report["scan"]:
        table.add_row(
            f"{r['tile']}²", str(r["stage"]), f"{r['b']}×{r['d']}×{r['h']}×{r['w']}", r["dtype"], r["backend"],
            r.get("error") or _num(r.get("forward_ms"), ".3f"), _num(r.get("forward_speedup"), ".1f"),
            _num(r.get("forward_backward_ms"), ".3f"), _num(r.get("forward_backward_speedup"), ".1f"),
            _num(r.get("max_err_vs_torch"), ".1e"),
        )  # fmt: skip
    console.print(table)
    table = Table(title="model predict, 256² tiles, random weights")
    for col in ("preset", "compile", "amp", "steps", "tiles/s", "ms/batch", "first call s"):
        table.add_column(col, justify="left" if col in ("preset", "amp") else "right")
    for r in report["model"]:
        table.add_row(
            r["preset"], "yes" if r["compile"] else "no", r["amp"], str(r["steps"]),
            r.get("error") or _num(r.get("tiles_per_s"), ".1f"), _num(_ms(r.get("seconds")), ".1f"),
            _num(r.get("first_call_s"), ".1f"),
        )  # fmt: skip
    console.print(table)
    table = Table(title="training step, paper, batch 8, 256² crops, random data")
    for col in ("amp", "compile", "it/s", "ms/it", "peak GiB", "first step s"):
        table.add_column(col, justify="right")
    for r in report["train"]:
        table.add_row(
            r["amp"], "yes" if r["compile"] else "no", r.get("error") or _num(r.get("it_per_s"), ".2f"),
            _num(_ms(r.get("seconds")), ".0f"), _num(r.get("peak_gib"), ".1f"), _num(r.get("first_step_s"), ".1f"),
        )  # fmt: skip
    console.print(table)
    for line in report["comparisons"]:
        console.print(line)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(device: torch.device) -> dict:
    return {
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "mamba_ssm": _version("mamba-ssm"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256² tile, `small`, steps 3, no compile")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per figure (default 20)")
    parser.add_argument("--batch", type=int, default=8, help="tiles per call for the scan and model parts (default 8)")
    parser.add_argument("--train-iters", type=int, default=10, help="timed training steps per variant (default 10)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_gpu.json"), help="JSON report path")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA device and torch sees none here; for CPU figures run bench/bench_scan.py, "
              "bench/bench_ss2d.py and bench/bench_model.py", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    device = torch.device("cuda")
    console = Console(width=None if sys.stdout.isatty() else 160)
    compiles = (False,) if args.quick or args.no_compile else (False, True)
    backends = scan_backends(device)
    report = {
        "machine": machine(device),
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}},
        "scan_backends": backends,
    }
    console.print(f"{report['machine']['gpu']}, torch {torch.__version__}, scan backends: {backends}")
    report["scan"] = bench_scan(device, TILES[:1] if args.quick else TILES, args.batch, args.repeats, backends)
    presets = ("small",) if args.quick else ("small", "paper")
    steps = (3,) if args.quick else (1, 3)
    report["model"] = bench_model(device, presets, ("off", "bf16"), compiles, steps, args.batch, args.repeats)
    variants = [("off", False), ("bf16", False)] + ([("bf16", True)] if True in compiles else [])
    report["train"] = [] if args.quick else bench_train(device, variants, 8, args.train_iters)
    report["comparisons"] = comparisons(report)
    print_report(report, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
