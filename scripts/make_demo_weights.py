"""Rebuild the demo weights shipped in `mdseg/weights/demo_tiny.safetensors`, from nothing but mdseg itself.

    python scripts/make_demo_weights.py [--work build/demo] [--iters 1000]

Steps (each is a public mdseg command; this script only chains them and stores the result in half precision):

1. `mdseg synth --out build/demo/synth-train --scenes 12 --val 2 --size 1024 --seed 1000` — 10 training and
   2 validation scenes; dataset scenes draw from SeedSequence(1000, spawn_key=(i,)), never the sample's seed 7.
2. `mdseg train --data build/demo/synth-train --model tiny --iters 1000 --batch-size 4 --crop 256
   --val-every 250 --seed 0 --out build/demo/run` on CPU.
3. The best checkpoint, weights stored as float16 (half the size; loading gives float32), its provenance marked
   as the demo and cleaned of the building machine's paths (`demo_provenance`), written to
   `mdseg/weights/demo_tiny.safetensors`. It carries the training split's per-band statistics, as every
   checkpoint of `mdseg train` does (predict compares a scene's bands with them).

    python scripts/make_demo_weights.py --clean-provenance

only rewrites the shipped file's provenance that way, and

    python scripts/make_demo_weights.py --input-stats [--work build/demo]

only stores the training split's statistics in it: step 1 again (the synthetic scenes are deterministic), then
the statistics `mdseg train` computes for them (`mdseg.engine.train.data.load_data`), after checking that
their normalisation is the file's own. Both go through `mdseg.checkpoint.rewrite_metadata`: the header changes,
every tensor's bytes stay.

Training on CPU is deterministic for a given machine and thread count; other CPUs may differ in the last bits.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mdseg  # noqa: F401  # isort: skip  (before torch: sets OMP_WAIT_POLICY)
import torch

from mdseg.checkpoint import DEMO_CHECKPOINT, load_checkpoint, read_checkpoint_meta, rewrite_metadata, save_checkpoint
from mdseg.data.stats import InputStats

DEMO_NOTE = (
    "mdseg demo weights: the tiny preset trained on synthetic scenes from `mdseg synth` "
    "(scripts/make_demo_weights.py); train on your own data for real maps"
)


def demo_provenance(provenance: dict) -> dict:
    """`provenance` marked as the demo's, without the scratch run folder and without any absolute path of the
    machine that built it: such paths become their last part, the command starts with `mdseg`."""

    def clean(value: object) -> object:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and Path(value).is_absolute():
            return Path(value).name
        return value

    out = {k: clean(v) for k, v in provenance.items() if k != "run"}
    command = provenance.get("command")
    if isinstance(command, str) and command:
        words = command.split()
        words = ["mdseg"] + [
            "=".join(str(clean(part)) for part in word.split("=", 1)) if word.startswith("--") else str(clean(word))
            for word in words[1:]
        ]
        out["command"] = " ".join(words)
    return {**out, "demo": True, "note": DEMO_NOTE}


def training_input_stats(data: Path, meta_normalisation: dict) -> InputStats:
    """The per-band statistics `mdseg train` stores for the training split of the dataset `data`; `SystemExit`
    when its normalisation is not `meta_normalisation` (then `data` is not the data the checkpoint was trained on)."""
    from mdseg.engine.train import TrainSettings, resolve_settings
    from mdseg.engine.train.data import load_data

    device = torch.device("cpu")
    run_data = load_data(resolve_settings(TrainSettings(data=str(data), device="cpu"), device))
    if run_data.train_set.normalisation.to_dict() != meta_normalisation:
        raise SystemExit(f"{data} is not the demo's training data: its normalisation differs from the checkpoint's")
    return run_data.input_stats


def synthesise(data: Path) -> None:
    """Step 1: the 10 training and 2 validation scenes the demo is trained on."""
    run(
        sys.executable, "-m", "mdseg", "synth", "--out", str(data), "--scenes", "12", "--val", "2", "--size", "1024",
        "--seed", "1000", "--overwrite",
    )  # fmt: skip


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("build/demo"), help="scratch folder (data and run)")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--skip-training", action="store_true", help="only convert an existing run's best")
    parser.add_argument(
        "--clean-provenance", action="store_true", help="only rewrite --out's provenance (weights untouched)"
    )
    parser.add_argument(
        "--input-stats",
        action="store_true",
        help="only store the training split's statistics in --out (scenes regenerated in --work; weights untouched)",
    )
    args = parser.parse_args()
    data, run_dir = args.work / "synth-train", args.work / "run"
    if args.clean_provenance:
        meta = read_checkpoint_meta(args.out)
        rewrite_metadata(args.out, replace(meta, provenance=demo_provenance(meta.provenance)))
        print(f"rewrote the provenance of {args.out}")
        return
    if args.input_stats:
        meta = read_checkpoint_meta(args.out)
        synthesise(data)
        stats = training_input_stats(data, meta.normalisation.to_dict())
        rewrite_metadata(args.out, replace(meta, input_stats=stats))
        print(f"stored the statistics of {len(stats.bands)} bands of the training split in {args.out}")
        return

    if not args.skip_training:
        mdseg_cmd = [sys.executable, "-m", "mdseg"]
        synthesise(data)
        run(
            *mdseg_cmd, "train", "--data", str(data), "--model", "tiny", "--iters", str(args.iters),
            "--batch-size", "4", "--crop", "256", "--val-every", "250", "--seed", "0", "--out", str(run_dir),
            "--device", "cpu",
        )  # fmt: skip
    model, meta = load_checkpoint(run_dir / "best.safetensors")
    meta = replace(meta, provenance=demo_provenance(meta.provenance))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, model, meta, dtype=torch.float16)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB), val mIoU {meta.provenance.get('val_miou')}")


if __name__ == "__main__":
    main()
