"""`mdseg train`: train a model on a dataset folder into a run folder (see `mdseg.engine.runs`)."""

from __future__ import annotations

import signal
import sys
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from mdseg.cli import options as opt_
from mdseg.cli.console import console, err_console

TRAIN_HELP = """Defaults (chosen for the device): `tiny` on CPU, `small` on GPU; 2000 iterations on CPU (20000 on GPU);
batch 4 (8); learning rate per preset scaled to the batch; warm-up 10 % of --iters (at most 1500); validation
and checkpoints every 10 % of the run (at least every iteration) on the `val` split.

Splits: a dataset without splits of its own (WHU-OPT-SAR and Hunan as distributed) is split by scene, 70 / 20 /
10 % train / val / test (--val-fraction, --test-fraction; seeded by --split-seed, default --seed), every class in
val where possible; the lists go to RUN/splits/train.txt, val.txt, test.txt, a resumed run keeps them and
`mdseg eval` scores the checkpoint on the test list. --split / --val-split give your own split instead.

Multi-GPU / multi-node: torchrun --nproc_per_node=K -m mdseg train --data DIR … (DistributedDataParallel; NCCL on
GPU, gloo on CPU; --batch-size is per process; rank 0 logs and writes)."""


def train(
    data: opt_.DataDir = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (must not exist). Default: runs/<data>-<model>[-N].")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Preset: tiny, small or paper.")] = None,
    iters: Annotated[int | None, typer.Option("--iters", help="Optimizer steps.", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Samples per step (per process).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (AdamW).")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="AdamW weight decay [0.01].")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Linear warm-up iterations, then poly decay.")] = None,
    crop: Annotated[int | None, typer.Option("--crop", help="Training crop side in px [256].")] = None,
    grad_clip: Annotated[
        float | None, typer.Option("--grad-clip", help="Max gradient norm; 0 turns clipping off [1.0].")
    ] = None,
    amp: opt_.Amp = None,
    compile_: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model [no].")
    ] = None,
    checkpoint_activations: Annotated[
        bool | None,
        typer.Option(
            "--checkpoint-activations/--no-checkpoint-activations",
            help="Recompute block activations in backward instead of keeping them: less memory, slower steps [no].",
        ),
    ] = None,
    seed: opt_.Seed = None,
    val_every: Annotated[
        int | None, typer.Option("--val-every", help="Iterations between validations [10 % of --iters, at least 1].")
    ] = None,
    save_every: Annotated[
        int | None, typer.Option("--save-every", help="Iterations between checkpoints [--val-every].")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader worker processes [2].")] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split", help="Training split folder or list file. Default: train, drawn when the dataset has no splits."
        ),
    ] = None,
    val_split: Annotated[
        str | None,
        typer.Option("--val-split", help="Validation split. Default: val, drawn when the dataset has no splits."),
    ] = None,
    split_seed: Annotated[
        int | None,
        typer.Option(
            "--split-seed", help="Seed of the scene split drawn for a dataset without splits [--seed].", min=0
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option("--val-fraction", help="Scenes for validation in a drawn split, 0–1 [0.2].", min=0.0, max=1.0),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(
            "--test-fraction", help="Scenes held out for testing in a drawn split, 0–1 [0.1].", min=0.0, max=1.0
        ),
    ] = None,
    opt_bands: opt_.OptBands = None,
    sar_bands: opt_.SarBands = None,
    sar_scale: opt_.SarScale = None,
    stats_file: Annotated[
        Path | None,
        typer.Option("--stats", help="Normalisation from `mdseg stats --json` output [dataset's, else computed]."),
    ] = None,
    steps: opt_.Steps = None,
    device: opt_.Device = None,
    threads: opt_.Threads = None,
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="'paper': the released run's settings (160k its, lr 6e-5, …).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Rerun a run's config.json; options given here override it.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder exactly where it stopped.")
    ] = None,
    quiet: opt_.Quiet = False,
) -> None:
    """Train a model on a dataset folder; writes checkpoints, logs and curves to a run folder.

    Ctrl-C or SIGTERM saves a resumable state first; `mdseg train --resume runs/NAME` continues exactly.
    """
    params = dict(locals())
    from mdseg.engine.train import TrainSettings, merge_settings
    from mdseg.engine.train import train as run_training
    from mdseg.engine.train.stop import last_stop_signal

    if resume is not None:
        settings = TrainSettings(data=str(data or ""), iters=iters, device=device or "auto", threads=threads)
    else:
        # Every training setting is a parameter of this command under its own name, but for these two.
        params.update(compile=compile_, stats=stats_file)
        given = {f.name: params[f.name] for f in fields(TrainSettings) if f.name in params and f.name != "data"}
        given = {name: str(value) if isinstance(value, Path) else value for name, value in given.items()}
        settings = merge_settings(str(data) if data is not None else None, config_file=config, **given)

    def say(text: str) -> None:
        if not quiet:
            err_console.print(text, highlight=False)

    result = run_training(settings, resume=resume, progress=not quiet, say=say)
    if result.last_checkpoint is None:  # not rank 0
        return
    if result.interrupted:
        sys.exit(128 + (last_stop_signal() or signal.SIGINT))  # 128 + the signal that stopped it
    best = "n/a" if result.best_miou is None else f"{result.best_miou:.4f}"
    console.print(
        f"trained {result.iteration} iterations in {result.seconds:.0f} s; best val mIoU {best}; "
        f"checkpoints: {result.best_checkpoint} (best), {result.last_checkpoint} (last)",
        highlight=False,
    )
