"""The training loop: set a run up (settings, folder, data, model, optimizer, loader), then step, log, validate
and save until the last iteration or a stop request.

Reproducibility: every iteration reseeds torch from (seed, rank, iteration) and draws its windows from
(seed, iteration) alone (see `IterationBatchSampler`), so a resumed run continues exactly as an uninterrupted one
on the same machine, whatever the number of `DataLoader` workers.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mdseg.checkpoint import CheckpointMeta, save_checkpoint
from mdseg.data.splits import write_split
from mdseg.engine.accel import autocast, prepare_model
from mdseg.engine.options import PredictOptions
from mdseg.engine.runs import (
    CONFIG_FILE,
    CURVES_FILE,
    RUN_BEST,
    RUN_LAST,
    SPLITS_DIR,
    STATE_FILE,
    check_new_run_dir,
    new_run_dir,
    run_relative,
)
from mdseg.engine.train.data import RunData, load_data, training_loader, worker_batches
from mdseg.engine.train.log import LossWindow, MetricsLog, plot_curves, progress_bar
from mdseg.engine.train.optim import learning_rate, new_optimizer, set_learning_rate
from mdseg.engine.train.settings import TrainSettings, load_settings_file, resolve_settings
from mdseg.engine.train.state import load_state, save_state
from mdseg.engine.train.stop import StopRequest
from mdseg.errors import MdsegError, OptionError
from mdseg.io.atomic import AtomicOutputs
from mdseg.runtime import Ranks, cpu_threads, distributed, resolve_device


@dataclass
class TrainResult:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    iteration: int
    seconds: float
    best_miou: float | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    interrupted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None  # the trained model (this rank's copy), in training mode


def train(
    settings: TrainSettings,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    on_iteration: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a model as `settings` say (or continue the run in folder `resume`); returns what it produced.

    Under `torchrun` (or inside an initialised process group) it trains with DistributedDataParallel; only rank 0
    logs and writes. `say` receives one-line notes for the user (defaults, data, where things go);
    `on_iteration(i)` is called after each finished iteration i (1-based), e.g. for a notebook's own display.
    """
    device = resolve_device(settings.device)
    with distributed(device) as ranks, cpu_threads(settings.threads):
        note = (say or _silent) if ranks.main else _silent
        run = _set_up(settings, resume, ranks, device, note)
        return _loop(run, progress and ranks.main, on_iteration)


@dataclass
class _Run:
    """A run once set up: what the loop steps, validates, logs and saves, and its score so far."""

    settings: TrainSettings
    run_dir: Path
    ranks: Ranks
    device: torch.device
    note: Callable[[str], None]
    data: RunData
    model: nn.Module  # what is saved and validated
    net: nn.Module  # what a step calls: `model`, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: DataLoader
    log: MetricsLog
    start: int
    best: float | None = None
    best_iter: int | None = None
    last_miou: float | None = None

    def due(self, iteration: int, every: int) -> bool:
        """Whether something done every `every` iterations (and after the last) is due after `iteration`."""
        return iteration % every == 0 or iteration == self.settings.iters

    def step(self, batch: dict[str, Any], iteration: int) -> dict[str, torch.Tensor]:
        """One optimizer step (0-based `iteration`) on `batch`; returns the loss terms."""
        settings, device = self.settings, self.device
        torch.manual_seed(_iteration_seed(settings.seed, self.ranks.rank, iteration))
        set_learning_rate(self.optimizer, settings, iteration)
        opt = batch["opt"].to(device, non_blocking=True)
        sar = batch["sar"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        with autocast(device, settings.amp):
            losses = self.net(opt, sar, label)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        if settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return losses

    def validate(self, iteration: int) -> bool:
        """Score the validation split after `iteration`, log it and say so; whether it is the best so far.

        The score is `mdseg eval`'s (`mdseg.engine.evaluate.evaluate`): the model in memory, with the metadata of
        the checkpoint it would be saved as, over the validation scenes as `mdseg predict` maps them — so
        `mdseg eval --split val` on the checkpoint saved now gives the same numbers."""
        from mdseg.engine.checkpoint_predict import SceneModel
        from mdseg.engine.evaluate import evaluate

        settings = self.settings
        scene = SceneModel.in_memory(self.model, _checkpoint_meta(self, iteration), self.device, settings.amp)
        options = PredictOptions(sar_scale=settings.sar_scale)
        metrics = evaluate(scene, self.data.val_layout, options, progress=False).metrics
        self.last_miou = _finite(metrics.miou)
        self.log.log({"iter": iteration, "val_miou": self.last_miou, "val_oa": _finite(metrics.oa)})
        is_best = self.last_miou is not None and (self.best is None or self.last_miou > self.best)
        if is_best:
            self.best, self.best_iter = self.last_miou, iteration
        self.note(
            f"iteration {iteration}: val mIoU {_fmt(self.last_miou)} (best {_fmt(self.best)} at {self.best_iter})"
        )
        return is_best

    def save(self, iteration: int, is_best: bool) -> None:
        """On rank 0: the resumable state, the last (and, when best or without validation, best) checkpoint and the
        curves, as after `iteration`."""
        if not self.ranks.main:
            return
        info = {"iteration": iteration, "best_miou": self.best, "best_iter": self.best_iter, "seed": self.settings.seed}
        save_state(self.run_dir / STATE_FILE, self.model, self.optimizer, info)
        meta = _checkpoint_meta(self, iteration)
        save_checkpoint(self.run_dir / RUN_LAST, self.model, meta)
        if is_best or self.data.val_layout is None:
            save_checkpoint(self.run_dir / RUN_BEST, self.model, meta)
        plot_curves(self.log.history, self.run_dir / CURVES_FILE)

    def stopped(self, iteration: int) -> None:
        """Save a resumable state after `iteration` and tell the user how to continue."""
        self.save(iteration, is_best=False)
        self.note(
            f"stopped at iteration {iteration}; saved a resumable state — continue with "
            f"`mdseg train --resume {self.run_dir}`"
        )


def _loop(run: _Run, progress: bool, on_iteration: Callable[[int], None] | None) -> TrainResult:
    """Step from the run's start to its last iteration, logging, validating and saving when due. A stop request
    (Ctrl-C, SIGTERM) on any rank ends every rank after the same iteration, with a resumable state saved."""
    settings, ranks = run.settings, run.ranks
    started = time.perf_counter()
    iteration, interrupted = run.start, False
    window = LossWindow()
    with (
        StopRequest() as stop,
        progress_bar(progress, settings.iters, run.start) as advance,
        worker_batches(run.loader) as batches,
    ):
        while True:
            fetch_started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception:
                if not stop.requested:
                    raise
                # Ctrl-C reaches the DataLoader workers too; the weights are those of the last finished iteration
                run.stopped(iteration)
                interrupted = True
                break
            step_started = time.perf_counter()
            losses = run.step(batch, iteration)
            iteration += 1
            loss = float(losses["loss"].detach())
            if not math.isfinite(loss):
                raise MdsegError(
                    f"the loss became {loss} at iteration {iteration}; lower --lr (now {settings.lr:.3g}) "
                    "or keep --grad-clip on"
                )
            # data_wait: seconds the step waited for its batch (the loader falls behind when this is not small)
            window.add(losses, data_wait=step_started - fetch_started, step_time=time.perf_counter() - fetch_started)
            lr = learning_rate(settings, iteration - 1)
            if run.due(iteration, settings.log_every):
                run.log.log(window.record(iteration, lr, time.perf_counter() - started))
            advance(iteration, loss, lr)

            if ranks.world > 1 and run.due(iteration, min(settings.val_every, settings.save_every)):
                # BatchNorm running statistics (on CPU, without SyncBN): DDP broadcasts rank 0's only at the start
                # of each forward, so each rank's last update would otherwise differ in what is validated and saved
                ranks.broadcast_tensors(run.model.buffers())
            is_best = False
            if run.data.val_layout is not None and run.due(iteration, settings.val_every):
                is_best = run.validate(iteration)
            if run.due(iteration, settings.save_every) or is_best:
                run.save(iteration, is_best)
            if on_iteration is not None:
                on_iteration(iteration)
            if ranks.any(stop.requested):
                interrupted = iteration < settings.iters
                if interrupted:
                    run.stopped(iteration)
                break
    run.log.close()
    return TrainResult(
        run_dir=run.run_dir,
        iteration=iteration,
        seconds=time.perf_counter() - started,
        best_miou=run.best,
        last_checkpoint=run.run_dir / RUN_LAST if ranks.main else None,
        best_checkpoint=run.run_dir / RUN_BEST if ranks.main else None,
        interrupted=interrupted,
        history=run.log.history,
        model=run.model,
    )


def _set_up(
    settings: TrainSettings,
    resume: str | Path | None,
    ranks: Ranks,
    device: torch.device,
    note: Callable[[str], None],
) -> _Run:
    """Everything the loop needs, in order: settings and folder, data, model and optimizer (restored when
    resuming), config.json, the DDP wrapper, the loader and the log."""
    settings, run_dir = _settings_and_folder(settings, resume, ranks, device)
    data = load_data(settings, resuming=resume is not None)
    note(data.summary())
    if data.crop is not None and data.crop != settings.crop:
        note(f"crops {data.crop} px instead of {settings.crop}: the smallest training scene is smaller than that")
        settings = replace(settings, crop=data.crop)
    if data.split is not None:
        note(f"{data.split.summary()}; lists in {run_dir / SPLITS_DIR}")
    note(
        f"model {settings.model}, {settings.iters} iterations at batch {settings.batch_size}"
        f"{f' × {ranks.world} processes' if ranks.world > 1 else ''}, lr {settings.lr:.3g}, "
        f"warm-up {settings.warmup}, crops {settings.crop} px, device {device}; run folder {run_dir}"
    )
    model = _new_model(settings, data, device)
    optimizer = new_optimizer(model, settings)
    info: dict[str, Any] = {"iteration": 0}
    if resume is not None:
        info = load_state(run_dir / STATE_FILE, model, optimizer)
        note(f"resuming {run_dir} at iteration {int(info['iteration'])} of {settings.iters}")
    start = int(info["iteration"])
    if start >= settings.iters:
        raise OptionError(f"run '{run_dir}' already did {start} of {settings.iters} iterations; pass a larger --iters")
    if ranks.main:
        _write_config(run_dir, settings)
        if data.split is not None and resume is None:
            write_split(data.split, run_dir / SPLITS_DIR)
    model.train()
    model, net = _parallel(model, device, ranks)
    return _Run(
        settings=settings,
        run_dir=run_dir,
        ranks=ranks,
        device=device,
        note=note,
        data=data,
        model=model,
        net=net,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=settings.amp == "fp16"),
        loader=training_loader(data.train_set, settings, start, ranks, device),
        log=MetricsLog(run_dir, ranks.main, start),
        start=start,
        best=info.get("best_miou"),
        best_iter=info.get("best_iter"),
    )


def _settings_and_folder(
    settings: TrainSettings, resume: str | Path | None, ranks: Ranks, device: torch.device
) -> tuple[TrainSettings, Path]:
    """The resolved settings (`out` set to the folder) and the run folder: a resumed run's own settings (only
    --iters, --device and --threads come from `settings`), else `settings` in a new folder rank 0 picks."""
    if resume is not None:
        run_dir = Path(resume)
        config = run_dir / CONFIG_FILE
        stored = TrainSettings.from_dict(load_settings_file(config), source=str(config))
        # a resumed run keeps its settings; only a longer (or shorter) --iters is taken from the command line
        settings = replace(
            stored, iters=settings.iters or stored.iters, device=settings.device, threads=settings.threads
        )
        if not (run_dir / STATE_FILE).is_file():
            raise MdsegError(f"'{run_dir}' has no resumable state ({STATE_FILE}); it cannot be resumed")
    settings = resolve_settings(settings, device, ranks.world)
    if resume is None:
        run_dir = _agree_on_run_dir(settings, ranks)
    return replace(settings, out=str(run_dir.resolve())), run_dir


def _agree_on_run_dir(settings: TrainSettings, ranks: Ranks) -> Path:
    """Rank 0 picks (and checks) the run folder and tells the others, so they cannot race it to a name; its
    error, if any, is raised on every rank."""
    choice: tuple[str | None, str | None] = (None, None)  # folder, error
    if ranks.main:
        try:
            run_dir = Path(settings.out) if settings.out else new_run_dir(settings.data, settings.model)
            check_new_run_dir(run_dir, settings.data)
            choice = (str(run_dir), None)
        except MdsegError as exc:
            choice = (None, str(exc))
    folder, error = ranks.broadcast(choice)
    if error is not None:
        raise OptionError(error)
    return Path(folder)


def _new_model(settings: TrainSettings, data: RunData, device: torch.device) -> nn.Module:
    """The settings' preset for the data's bands and classes, seeded so every rank starts from the same weights
    (DDP also broadcasts rank 0's), checkpointing activations when asked, prepared for the device (channels-last
    on CUDA, compiled when asked)."""
    from mdseg.models.segmentor import build_model

    layout = data.layout
    torch.manual_seed(settings.seed)
    model = build_model(settings.model, len(layout.opt_bands), len(layout.sar_bands), len(layout.classes.names))
    model.set_activation_checkpointing(settings.checkpoint_activations)
    model = model.to(device)
    prepare_model(model, device, compile=settings.compile)
    return model


def _write_config(run_dir: Path, settings: TrainSettings) -> None:
    """config.json: the fully resolved settings (rerun them with `mdseg train --config`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with AtomicOutputs(overwrite=True) as outputs:
        outputs.reserve(run_dir / CONFIG_FILE).write_text(json.dumps(settings.to_dict(), indent=2) + "\n")


def _parallel(model: nn.Module, device: torch.device, ranks: Ranks) -> tuple[nn.Module, nn.Module]:
    """The model to save and validate, and the module a step calls: the model alone, or with several ranks its
    DistributedDataParallel wrapper (with batch statistics over all GPUs on CUDA, as MMSegmentation's SyncBN)."""
    if ranks.world == 1:
        return model, model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return model, nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _checkpoint_meta(run: _Run, iteration: int) -> CheckpointMeta:
    """What a checkpoint saved after `iteration` carries: the model and data fields predict needs, the training
    split's per-band statistics (for predict's input check), and the run's provenance (settings, data, validation
    and test splits, the drawn split, normalisation, command). Paths in the provenance are relative to the run
    folder (the command's to the folder it ran in): a checkpoint that travels carries no absolute path of the
    machine that trained it."""
    description = run.data.description
    data_fields = {k: v for k, v in description.checkpoint_fields().items() if k != "provenance"}
    settings = run.settings.to_dict()
    for key in ("data", "out", "stats", "split", "val_split"):
        if settings[key] is not None and Path(settings[key]).is_absolute():
            settings[key] = run_relative(settings[key], run.run_dir)
    return CheckpointMeta(
        config=run.model.config,
        **data_fields,
        tile=run.settings.crop,
        steps=run.settings.steps,
        input_stats=run.data.input_stats,
        provenance={
            "trained_with": "mdseg train",
            "run": run.run_dir.resolve().name,
            "iteration": iteration,
            "val_miou": run.last_miou,
            "settings": settings,
            **run.data.provenance(run.run_dir),
            "command": _command(sys.argv),
        },
    )


def _command(argv: list[str]) -> str | None:
    """The `mdseg train` command line as typed, absolute paths in it made relative to the folder it ran in;
    None when training was started from Python rather than the command line."""
    if argv[1:2] != ["train"]:
        return None
    words = ["mdseg"]
    for word in argv[1:]:
        option, equals, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if Path(value).is_absolute():
            value = run_relative(value, Path.cwd())
        words.append(option + equals + value)
    return " ".join(words)


def _iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """torch's seed for `iteration` on `rank`: from (seed, rank, iteration) alone, so a resumed run repeats it."""
    return int(np.random.SeedSequence((seed, rank, iteration)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _silent(text: str) -> None:
    """A `say` that says nothing (ranks other than 0, or no `say` given)."""


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = ["TrainResult", "train"]
