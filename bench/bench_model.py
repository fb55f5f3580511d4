"""Model forward cost per 256×256 tile on CPU, per preset: time for steps 1, 3, 10, split by part.

    python bench/bench_model.py [--presets tiny,small,paper] [--tile 256] [--repeats 3]
                                [--out bench/results/bench_model.json]

Each preset runs in its own subprocess (so its peak RSS is its own). Reported per preset: total predict time
for steps 1/3/10; the encoder / fusion / neck / head-per-step split; GFLOPs (torch.utils.flop_counter) and
achieved GFLOP/s against a plain torch.matmul measured in the same run (efficiency); the selective scan's share
of encoder and of fusion time; peak RSS. Targets are printed PASS/FAIL.
"""

from __future__ import annotations

import mdseg  # noqa: F401  # isort: skip  (before torch: OpenMP threads must wait passively, see mdseg/__init__)
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def _best_time(fn, repeats: int) -> float:
    """Fastest of `repeats` runs after one warm-up (numba compiles on first use). The minimum, not the median:
    on a shared machine other processes only ever add time."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(repeats: int) -> float:
    """GFLOP/s of a plain float32 matmul shaped like the model's projections: (4096×512) @ (512×1024)."""
    a, b = torch.randn(4096, 512), torch.randn(512, 1024)
    seconds = _best_time(lambda: torch.matmul(a, b), max(5, repeats))
    return 2 * 4096 * 512 * 1024 / seconds / 1e9


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


def bench_preset(name: str, tile: int, repeats: int) -> dict:
    from mdseg.config import preset
    from mdseg.kernels import resolve_backend
    from mdseg.models import build_model
    from mdseg.models.cost import model_cost

    torch.manual_seed(0)
    config = preset(name)
    cost = model_cost(config, tile)
    model = build_model(config).eval()
    opt = torch.randn(1, config.opt_bands, tile, tile)
    sar = torch.randn(1, config.sar_bands, tile, tile)
    result: dict = {"preset": name, "tile": tile, "threads": torch.get_num_threads()}
    result["scan_backend"] = resolve_backend("auto", "cpu")
    with torch.no_grad():
        # interleave the step counts so a burst of load elsewhere hits all of them alike
        best = {steps: float("inf") for steps in (1, 3, 10)}
        for _ in range(repeats + 1):
            for steps in best:
                generator = torch.Generator().manual_seed(0)
                start = time.perf_counter()
                model.predict(opt, sar, steps=steps, generator=generator)
                best[steps] = min(best[steps], time.perf_counter() - start)
        for steps, seconds in best.items():
            result[f"predict_s_steps{steps}"] = seconds
        timer = _PartTimer(model)
        features = model.backbone(opt, sar)
        timer.reset()
        backbone_s = _best_time(lambda: model.backbone(opt, sar), repeats)
        # the hooks accumulated over warm-up + repeats: average per call
        calls = repeats + 1
        fusion_s = timer.fusion / calls
        scan = {k: v / calls for k, v in timer.scan.items()}
        timer.close()
        feature = model.neck(features)
        neck_s = _best_time(lambda: model.neck(features), repeats)
        latent = torch.randn(feature.shape, generator=torch.Generator().manual_seed(0))
        head_s = _best_time(lambda: model.sample_head(feature, latent, 1), repeats)
    encoder_s = backbone_s - fusion_s
    result["split_s"] = {"encoder": encoder_s, "fusion": fusion_s, "neck": neck_s, "head per step": head_s}
    result["scan_share_of_encoder"] = scan["encoder"] / encoder_s
    result["scan_share_of_fusion"] = scan["fusion"] / fusion_s if fusion_s else 0.0
    result["gflops"] = {**cost.gflops, "steps1": cost.gflops_total(1), "steps3": cost.gflops_total(3)}
    result["achieved_gflops_per_s"] = cost.gflops_total(1) / result["predict_s_steps1"]
    result["matmul_gflops_per_s"] = matmul_gflops(repeats)
    result["efficiency"] = result["achieved_gflops_per_s"] / result["matmul_gflops_per_s"]
    result["steps3_over_steps1"] = result["predict_s_steps3"] / result["predict_s_steps1"]
    predicted = (encoder_s + fusion_s + neck_s + 3 * head_s) / (encoder_s + fusion_s + neck_s + head_s)
    result["steps3_over_steps1_from_split"] = predicted
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def print_table(results: list[dict]) -> None:
    header = (
        f"{'preset':7} {'steps1 s':>9} {'steps3 s':>9} {'steps10 s':>9} {'3/1':>5} {'enc s':>7} {'fus s':>7} "
        f"{'neck s':>7} {'head/st s':>9} {'GFLOP':>7} {'GFLOP/s':>8} {'mm GF/s':>8} {'eff':>5} "
        f"{'scan/enc':>8} {'scan/fus':>8} {'RSS MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        s = r["split_s"]
        print(
            f"{r['preset']:7} {r['predict_s_steps1']:9.3f} {r['predict_s_steps3']:9.3f} {r['predict_s_steps10']:9.3f} "
            f"{r['steps3_over_steps1']:5.2f} {s['encoder']:7.3f} {s['fusion']:7.3f} {s['neck']:7.3f} "
            f"{s['head per step']:9.3f} {r['gflops']['steps1']:7.1f} {r['achieved_gflops_per_s']:8.1f} "
            f"{r['matmul_gflops_per_s']:8.1f} {r['efficiency']:5.2f} {r['scan_share_of_encoder']:8.1%} "
            f"{r['scan_share_of_fusion']:8.1%} {r['peak_rss_mib']:8.0f}"
        )


def targets(results: list[dict]) -> list[dict]:
    checks = []
    for r in results:
        if r["preset"] == "paper":
            checks.append(("paper time(steps=3)/time(steps=1) <= 1.8", r["steps3_over_steps1"], 1.8, "<="))
            checks.append(("paper reaches >= 40% of matmul GFLOP/s", r["efficiency"], 0.40, ">="))
        if r["preset"] == "tiny":
            checks.append(("tiny 256² tile, steps=3 <= 0.5 s", r["predict_s_steps3"], 0.5, "<="))
        checks.append((f"{r['preset']} scan share of encoder time <= 25%", r["scan_share_of_encoder"], 0.25, "<="))
    out = []
    for name, value, bound, op in checks:
        ok = value <= bound if op == "<=" else value >= bound
        out.append({"target": name, "value": value, "bound": bound, "pass": ok})
        print(f"{'PASS' if ok else 'FAIL'}  {name}: measured {value:.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small,paper")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_model.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one preset, print its JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(bench_preset(args.one, args.tile, args.repeats)))
        return
    results = []
    for name in args.presets.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--tile", str(args.tile), "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tile {args.tile}², CPU float32")
    print_table(results)
    checks = targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "targets": checks}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
