"""The fused SS2D scan against composing its parts, on the `cpu` backend.

    python bench/bench_ss2d.py [--out bench/results/bench_ss2d.json]

`ss2d_scan(backend="cpu")` reads the four scan orders from the map and merges into it inside the kernel; the
baseline materialises them with `cross_scan`, runs `selective_scan(backend="cpu")` and `cross_merge`s, in the
same run. Shapes are SS2D's in a 256² tile (d_state 1). Prints a table of median ms and speed-ups; writes JSON.
"""

from __future__ import annotations

import mdseg  # noqa: F401  # isort: skip  (before torch: OpenMP threads must wait passively, see mdseg/__init__)
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mdseg.kernels import cross_merge, cross_scan, selective_scan, ss2d_scan

SHAPES = [(1, 256, 64, 64), (1, 512, 32, 32), (2, 48, 64, 64)]  # (batch, d_inner, h, w)


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _composed(u, delta, A, B, C, D, bias):
    b, d, h, w = u.shape
    length = h * w
    y = selective_scan(
        cross_scan(u).reshape(b, 4 * d, length), delta.reshape(b, 4 * d, length), A, B, C, D, None, bias, True,
        backend="cpu",
    )  # fmt: skip
    return cross_merge(y.view(b, 4, d, length), h, w)


def _fused(u, delta, A, B, C, D, bias):
    return ss2d_scan(u, delta, A, B, C, D, bias, True, backend="cpu")


def bench_shape(b: int, d: int, h: int, w: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    length = h * w
    inputs = [
        torch.randn(b, d, h, w, generator=g),
        torch.randn(b, 4, d, length, generator=g) * 0.5,
        -(torch.rand(4 * d, 1, generator=g) + 0.3),
        torch.randn(b, 4, 1, length, generator=g),
        torch.randn(b, 4, 1, length, generator=g),
        torch.randn(4 * d, generator=g),
        torch.randn(4 * d, generator=g),
    ]
    row = {"b": b, "d": d, "h": h, "w": w}
    for name, fn in (("fused", _fused), ("composed", _composed)):
        with torch.no_grad():
            row[f"{name}_forward_ms"] = _median_ms(lambda fn=fn: fn(*inputs), repeats)
        leaves = [t.clone().requires_grad_() for t in inputs]
        row[f"{name}_forward_backward_ms"] = _median_ms(lambda fn=fn, a=leaves: fn(*a).sum().backward(), repeats)
    row["forward_speedup"] = row["composed_forward_ms"] / row["fused_forward_ms"]
    row["forward_backward_speedup"] = row["composed_forward_backward_ms"] / row["fused_forward_backward_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_ss2d.json"))
    args = parser.parse_args()
    rows = [bench_shape(*shape, args.repeats) for shape in SHAPES]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu backend, median ms")
    header = f"{'shape (b, d, h×w)':20} {'fused fwd':>10} {'composed':>10} {'×':>5}"
    print(header + f" {'fused f+b':>10} {'composed':>10} {'×':>5}")
    for r in rows:
        shape = f"({r['b']}, {r['d']}, {r['h']}×{r['w']})"
        print(
            f"{shape:20} {r['fused_forward_ms']:10.2f} {r['composed_forward_ms']:10.2f} {r['forward_speedup']:5.2f} "
            f"{r['fused_forward_backward_ms']:10.1f} {r['composed_forward_backward_ms']:10.1f} "
            f"{r['forward_backward_speedup']:5.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
