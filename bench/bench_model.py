"""Model forward cost per 256×256 tile on CPU, per preset: time for steps 1, 3, 10, split by part.

    python bench/bench_model.py [--presets tiny,small,paper] [--tile 256] [--repeats 5] [--quick]
                                [--out bench/results/bench_model.json]

Each preset runs in its own subprocess (so its peak RSS is its own). Every figure is the median of `repeats`
rounds; a round times a plain torch.matmul, predict with steps 1, 3 and 10, one head step, and the head's
deformable sampling both ways (five calls each, alternating), one after the other, so a burst of load
elsewhere hits all of them alike. Ratios (efficiency, steps3/steps1, sampling speed-up) are taken within a
round, then the median over rounds.

Reported per preset: predict time for steps 1/3/10 and steps3/steps1; the encoder / fusion / neck /
head-per-step split and the head's share of a steps=1 tile; GFLOPs (torch.utils.flop_counter) and achieved
GFLOP/s against the plain matmul (efficiency); the head's deformable sampling, fused (`deformable_sample`)
against its grid_sample reference measured in the same rounds; the selective scan's share of encoder and of
fusion time; copies per tile (aten::copy_ of more than one element, by what made them: layout — contiguous,
reshape, clone, an op copying its input —, bias broadcast before a matrix product, dtype conversion); peak
RSS. Targets are printed PASS/FAIL. `--quick`: tiny and small, 3 rounds, no steps=10, no profile.
"""

from __future__ import annotations

import mdseg  # noqa: F401  # isort: skip  (before torch: OpenMP threads must wait passively, see mdseg/__init__)
import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

_MATMUL_SHAPE = (4096, 512, 1024)  # shaped like the model's projections: (4096×512) @ (512×1024)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_time(fn, repeats: int) -> float:
    """Median of `repeats` runs after one warm-up (numba compiles on first use)."""
    fn()
    return statistics.median(_seconds(fn) for _ in range(repeats))


def matmul_gflops(tries: int = 3) -> float:
    """GFLOP/s of a plain float32 torch.matmul (4096×512) @ (512×1024), the fastest of `tries` (a burst of load
    elsewhere only ever slows a 40 ms product down)."""
    m, k, n = _MATMUL_SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    return 2 * m * k * n / min(_seconds(lambda: torch.matmul(a, b)) for _ in range(tries)) / 1e9


class _PartTimer:
    """Wall time spent inside fusion blocks and inside the SS2D scan (split by encoder/fusion), via hooks."""

    def __init__(self, model) -> None:
        import mdseg.models.encoder as encoder

        self.fusion = 0.0
        self.scan = {"encoder": 0.0, "fusion": 0.0}
        self._inside_fusion = 0
        self._start = 0.0
        self._encoder = encoder
        self._scan = encoder.ss2d_scan
        for stage in model.backbone.stages:
            for block in (*stage.dcf, *stage.dss4):
                block.register_forward_pre_hook(self._enter)
                block.register_forward_hook(self._leave)

        def timed_scan(*args, **kwargs):
            start = time.perf_counter()
            out = self._scan(*args, **kwargs)
            self.scan["fusion" if self._inside_fusion else "encoder"] += time.perf_counter() - start
            return out

        encoder.ss2d_scan = timed_scan

    def _enter(self, module, args) -> None:
        self._inside_fusion += 1
        self._start = time.perf_counter()

    def _leave(self, module, args, output) -> None:
        self._inside_fusion -= 1
        self.fusion += time.perf_counter() - self._start

    def reset(self) -> None:
        self.fusion = 0.0
        self.scan = {"encoder": 0.0, "fusion": 0.0}

    def close(self) -> None:
        self._encoder.ss2d_scan = self._scan


def _copy_kind(event) -> str:
    """What made an aten::copy_: the nearest aten op above it in the profiler's tree."""
    parent = event.cpu_parent
    while parent is not None and parent.name in ("aten::copy_", "aten::clone", "aten::_to_copy"):
        if parent.name == "aten::_to_copy":
            return "dtype"
        parent = parent.cpu_parent
    if parent is not None and parent.name in ("aten::addmm", "aten::linear", "aten::baddbmm"):
        return "bias"
    return "layout"


def profile_part(fn, top: int = 8) -> dict:
    """Top ops by self CPU time and the copies of one call of `fn`, from torch.profiler (CPU, record_shapes)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    copies: Counter = Counter()
    for e in prof.events():
        if e.name == "aten::copy_" and e.input_shapes and math.prod(e.input_shapes[0]) > 1:
            copies[_copy_kind(e)] += 1
    copy_ms = sum(e.self_cpu_time_total for e in events if e.key == "aten::copy_") / 1e3
    return {
        "self_cpu_ms": total / 1e3,
        "top_ops": [
            {
                "op": e.key,
                "calls": e.count,
                "self_ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / total,
            }
            for e in ops
        ],
        "copies": dict(copies),
        "copy_ms": copy_ms,
    }


def sampling_inputs(config, tile: int) -> tuple:
    """The head's deformable-sampling inputs for one tile: its stride-4 map, random offsets and weights."""
    from mdseg.models.deformable_attention import reference_points

    side = tile // 4
    heads, points = config.head_heads, config.head_points
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(1, side * side, heads, config.neck_channels // heads, generator=gen)
    offsets = 2 * torch.randn(1, side * side, heads, points, 2, generator=gen)
    weights = torch.randn(1, side * side, heads, points, generator=gen).softmax(-1)
    return value, reference_points(side, side), offsets, weights, (side, side)


def bench_preset(name: str, tile: int, repeats: int, step_counts: tuple[int, ...], with_profile: bool) -> dict:
    from mdseg.config import preset
    from mdseg.kernels import resolve_backend
    from mdseg.models import build_model
    from mdseg.models.cost import model_cost
    from mdseg.models.deformable_attention import deformable_sample, deformable_sample_reference

    torch.manual_seed(0)
    config = preset(name)
    cost = model_cost(config, tile)
    gflops1 = cost.gflops_total(1)
    model = build_model(config).eval()
    opt = torch.randn(1, config.opt_bands, tile, tile)
    sar = torch.randn(1, config.sar_bands, tile, tile)
    result: dict = {"preset": name, "tile": tile, "threads": torch.get_num_threads(), "rounds": repeats}
    result["scan_backend"] = resolve_backend("auto", "cpu")
    sampling = sampling_inputs(config, tile)
    samplers = {"fused": deformable_sample, "reference": deformable_sample_reference}

    def predict(steps: int) -> None:
        model.predict(opt, sar, steps=steps, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        feature = model.extract_features(opt, sar)
        latent = torch.randn(feature.shape, generator=torch.Generator().manual_seed(0))
        predict(1)
        for sample in samplers.values():
            sample(*sampling)
        rounds = []
        for _ in range(repeats):
            r = {"matmul_gflops_per_s": matmul_gflops()}
            for steps in step_counts:
                r[f"steps{steps}"] = _seconds(lambda steps=steps: predict(steps))
            r["head_step"] = _seconds(lambda: model.sample_head(feature, latent, 1))
            calls = {kind: [] for kind in samplers}
            for _ in range(5):  # milliseconds each: five of each, alternating, per round
                for kind in calls:
                    calls[kind].append(_seconds(lambda kind=kind: samplers[kind](*sampling)))
            r.update({f"sampling_{kind}": statistics.median(times) for kind, times in calls.items()})
            rounds.append(r)

        timer = _PartTimer(model)
        features = model.backbone(opt, sar)
        timer.reset()
        backbone_s = _median_time(lambda: model.backbone(opt, sar), repeats)
        # the hooks accumulated over warm-up + repeats: average per call
        calls = repeats + 1
        fusion_s = timer.fusion / calls
        scan = {k: v / calls for k, v in timer.scan.items()}
        timer.close()
        neck_s = _median_time(lambda: model.neck(features), repeats)
        if with_profile:
            result["profile"] = {
                "backbone": profile_part(lambda: model.backbone(opt, sar)),
                "neck": profile_part(lambda: model.neck(features)),
                "head per step": profile_part(lambda: model.sample_head(feature, latent, 1)),
            }

    def median(key) -> float:
        return statistics.median(key(r) for r in rounds)

    for steps in step_counts:
        result[f"predict_s_steps{steps}"] = median(lambda r, s=steps: r[f"steps{s}"])
    head_s = median(lambda r: r["head_step"])
    encoder_s = backbone_s - fusion_s
    result["split_s"] = {"encoder": encoder_s, "fusion": fusion_s, "neck": neck_s, "head per step": head_s}
    result["head_share_steps1"] = median(lambda r: r["head_step"] / r["steps1"])
    result["scan_share_of_encoder"] = scan["encoder"] / encoder_s
    result["scan_share_of_fusion"] = scan["fusion"] / fusion_s if fusion_s else 0.0
    result["gflops"] = {**cost.gflops, "steps1": gflops1, "steps3": cost.gflops_total(3)}
    result["matmul_gflops_per_s"] = median(lambda r: r["matmul_gflops_per_s"])
    result["achieved_gflops_per_s"] = gflops1 / result["predict_s_steps1"]
    result["efficiency"] = median(lambda r: gflops1 / r["steps1"] / r["matmul_gflops_per_s"])
    result["steps3_over_steps1"] = median(lambda r: r["steps3"] / r["steps1"])
    predicted = (encoder_s + fusion_s + neck_s + 3 * head_s) / (encoder_s + fusion_s + neck_s + head_s)
    result["steps3_over_steps1_from_split"] = predicted
    result["sampling_ms"] = {kind: 1e3 * median(lambda r, k=kind: r[f"sampling_{k}"]) for kind in samplers}
    result["sampling_speedup"] = median(lambda r: r["sampling_reference"] / r["sampling_fused"])
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def print_table(results: list[dict]) -> None:
    header = (
        f"{'preset':7} {'steps1 s':>9} {'steps3 s':>9} {'steps10 s':>9} {'3/1':>5} {'enc s':>7} {'fus s':>7} "
        f"{'neck s':>7} {'head/st s':>9} {'head %':>6} {'GFLOP':>7} {'GFLOP/s':>8} {'mm GF/s':>8} {'eff':>5} "
        f"{'samp ms':>8} {'ref ms':>7} {'×':>5} {'scan/enc':>8} {'scan/fus':>8} {'RSS MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        s = r["split_s"]
        steps10 = r.get("predict_s_steps10", float("nan"))
        print(
            f"{r['preset']:7} {r['predict_s_steps1']:9.3f} {r['predict_s_steps3']:9.3f} {steps10:9.3f} "
            f"{r['steps3_over_steps1']:5.2f} {s['encoder']:7.3f} {s['fusion']:7.3f} {s['neck']:7.3f} "
            f"{s['head per step']:9.3f} {r['head_share_steps1']:6.1%} {r['gflops']['steps1']:7.1f} "
            f"{r['achieved_gflops_per_s']:8.1f} {r['matmul_gflops_per_s']:8.1f} {r['efficiency']:5.2f} "
            f"{r['sampling_ms']['fused']:8.2f} {r['sampling_ms']['reference']:7.2f} {r['sampling_speedup']:5.1f} "
            f"{r['scan_share_of_encoder']:8.1%} {r['scan_share_of_fusion']:8.1%} {r['peak_rss_mib']:8.0f}"
        )


def print_profiles(results: list[dict]) -> None:
    for r in results:
        for part, p in r.get("profile", {}).items():
            copies = ", ".join(f"{kind} {n}" for kind, n in sorted(p["copies"].items()))
            print(
                f"\n{r['preset']} {part}: {p['self_cpu_ms']:.0f} ms self CPU; copies: {copies} ({p['copy_ms']:.1f} ms)"
            )
            for op in p["top_ops"]:
                print(f"  {op['op']:36} {op['calls']:5d} calls {op['self_ms']:9.1f} ms {op['share']:6.1%}")


def targets(results: list[dict]) -> list[dict]:
    checks = []
    for r in results:
        if r["preset"] == "paper":
            checks.append(("paper time(steps=3)/time(steps=1) <= 1.8", r["steps3_over_steps1"], 1.8, "<="))
            checks.append(("paper reaches >= 45% of matmul GFLOP/s", r["efficiency"], 0.45, ">="))
        if r["preset"] == "tiny":
            checks.append(("tiny 256² tile, steps=3 <= 0.5 s", r["predict_s_steps3"], 0.5, "<="))
        checks.append(
            (f"{r['preset']} fused deformable sampling faster than grid_sample", r["sampling_speedup"], 1.0, ">")
        )
        checks.append((f"{r['preset']} scan share of encoder time <= 25%", r["scan_share_of_encoder"], 0.25, "<="))
    out = []
    for name, value, bound, op in checks:
        ok = {"<=": value <= bound, ">=": value >= bound, ">": value > bound}[op]
        out.append({"target": name, "value": value, "bound": bound, "pass": ok})
        print(f"{'PASS' if ok else 'FAIL'}  {name}: measured {value:.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", help="comma-separated (default tiny,small,paper; tiny,small with --quick)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="rounds per preset (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="tiny and small, 3 rounds, no steps=10, no profile")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_model.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one preset, print its JSON
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 3)
    args.presets = args.presets or ("tiny,small" if args.quick else "tiny,small,paper")
    step_counts = (1, 3) if args.quick else (1, 3, 10)
    if args.one:
        print(json.dumps(bench_preset(args.one, args.tile, args.repeats, step_counts, not args.quick)))
        return
    results = []
    for name in args.presets.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--tile", str(args.tile), "--repeats", str(args.repeats)]
        done = subprocess.run([*cmd, *(["--quick"] if args.quick else [])], capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tile {args.tile}², CPU float32, ", end="")
    print(f"medians of {args.repeats} rounds")
    print_table(results)
    print_profiles(results)
    checks = targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "targets": checks}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
