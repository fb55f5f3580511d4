"""The training loop: settings, run folders, AdamW + warm-up/poly schedule, validation, checkpoints, resume, DDP.

A run lives in one folder (`runs/<name>/`):

- `config.json`: the fully resolved `TrainSettings` (rerun with `mdseg train --config runs/<name>/config.json`);
- `last.safetensors`, `best.safetensors`: mdseg checkpoints (weights + everything `predict` needs);
- `state.safetensors`: the resumable state (fp32 weights, optimizer moments, iteration, best score) as
  safetensors + JSON, so resuming never unpickles anything;
- `metrics.jsonl` (one JSON object per logged iteration or validation), `curves.png`, and TensorBoard event
  files under `tb/` when TensorBoard is installed.

Reproducibility: every iteration reseeds torch from (seed, rank, iteration) and draws its windows from
(seed, iteration) alone (see `IterationBatchSampler`), so a resumed run continues exactly as an uninterrupted one
on the same machine, whatever the number of `DataLoader` workers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Sampler

from mdseg.checkpoint import CheckpointMeta, save_checkpoint
from mdseg.data import Augment, GridWindowSampler, RandomWindowSampler, SegmentationDataset, find_dataset
from mdseg.data.normalise import Normalisation
from mdseg.data.sampler import WindowQuery
from mdseg.engine.accel import autocast, check_amp, prepare_model
from mdseg.engine.runs import RUN_BEST as BEST_CHECKPOINT
from mdseg.engine.runs import RUN_LAST as LAST_CHECKPOINT
from mdseg.errors import DatasetError, MdsegError, OptionError
from mdseg.io.atomic import AtomicOutputs
from mdseg.metrics import ConfusionMatrix, all_reduce, compute_metrics
from mdseg.runtime import cpu_threads, resolve_device

CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
STATE_FORMAT = 1

# Learning rate per preset at batch 8, for runs of a few thousand iterations (scaled linearly with the batch).
# The release's 6e-5 (`--recipe paper`) suits its 160k-iteration schedule; short runs need more.
BASE_LR = {"tiny": 1e-3, "small": 4e-4, "paper": 2e-4}
RECIPES: dict[str, dict[str, Any]] = {
    # The authors' released WHU-OPT-SAR run (DESIGN.md): 160k iterations at batch 8, AdamW 6e-5, wd 0.01,
    # 1500 warm-up iterations then poly, 256² crops, no gradient clipping, seed 2024.
    "paper": {
        "model": "paper",
        "iters": 160_000,
        "batch_size": 8,
        "lr": 6e-5,
        "weight_decay": 0.01,
        "warmup": 1500,
        "crop": 256,
        "grad_clip": 0.0,
        "seed": 2024,
    },
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run needs; None means "choose for me" (see `resolve_settings`).

    `iters`: optimizer steps; `batch_size`: samples per step per process; `lr`: peak learning rate; `warmup`:
    linear warm-up iterations (then poly power 1 to 0); `crop`: training crop side in px (also the tile size
    stored for predict); `grad_clip`: max gradient norm (0: off); `val_every` / `save_every`: iterations
    between validations / checkpoints; `steps`: DDIM steps for validation and the checkpoint's default;
    `stats`: a JSON file from `mdseg stats --json` with the normalisation (else the dataset's published
    constants, else computed on the training split).
    """

    data: str
    out: str | None = None
    model: str | None = None
    iters: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.01
    warmup: int | None = None
    crop: int = 256
    grad_clip: float = 1.0
    amp: str = "off"
    compile: bool = False
    seed: int = 0
    val_every: int | None = None
    save_every: int | None = None
    log_every: int = 10
    workers: int = 2
    split: str | None = None
    val_split: str | None = None
    opt_bands: tuple[int, ...] | None = None
    sar_bands: tuple[int, ...] | None = None
    sar_scale: str = "auto"
    stats: str | None = None
    steps: int = 3
    device: str = "auto"
    threads: int | None = None
    recipe: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `config.json` holds)."""
        out = asdict(self)
        for key in ("opt_bands", "sar_bands"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "settings") -> TrainSettings:
        """Rebuild from `to_dict()` output (e.g. a run's config.json); unknown keys are an `OptionError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptionError(f"{source} has unknown settings {unknown}; known: {sorted(known)}")
        if "data" not in data:
            raise OptionError(f"{source} does not say which data to train on (no 'data' setting)")
        values = dict(data)
        for key in ("opt_bands", "sar_bands"):
            if values.get(key) is not None:
                values[key] = tuple(int(b) for b in values[key])
        return cls(**values)


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """The settings stored in a JSON file (a run's config.json), as a dict."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise OptionError(f"config file '{path}' does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise OptionError(f"config file '{path}' is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise OptionError(f"config file '{path}' must hold a JSON object of settings")
    return data


def merge_settings(
    data: str | None, *, config_file: str | Path | None = None, recipe: str | None = None, **given: Any
) -> TrainSettings:
    """Settings from, in increasing priority: defaults, a config file, a recipe, explicitly given values (None
    values are "not given")."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_settings_file(config_file))
        values.pop("out", None)  # rerunning a config makes a new run folder unless --out says otherwise
    recipe = recipe if recipe is not None else values.get("recipe")
    if recipe is not None:
        if recipe not in RECIPES:
            raise OptionError(f"unknown recipe {recipe!r}; choose from: {', '.join(RECIPES)}")
        values.update(RECIPES[recipe])
        values["recipe"] = recipe
    if data is not None:
        values["data"] = data
    values.update({k: v for k, v in given.items() if v is not None})
    if "data" not in values:
        raise OptionError("say which data to train on: --data DIR (or --config FILE of an earlier run)")
    return TrainSettings.from_dict(values, source=str(config_file) if config_file else "settings")


def resolve_settings(settings: TrainSettings, device: torch.device, world_size: int = 1) -> TrainSettings:
    """Fill every "choose for me" (None) with the default for this device and check the values."""
    on_gpu = device.type == "cuda"
    model = settings.model or ("small" if on_gpu else "tiny")
    if model not in BASE_LR:
        raise OptionError(f"unknown model preset {model!r}; choose one of: {', '.join(BASE_LR)}")
    iters = settings.iters if settings.iters is not None else (20_000 if on_gpu else 2_000)
    batch = settings.batch_size if settings.batch_size is not None else (8 if on_gpu else 4)
    lr = settings.lr if settings.lr is not None else BASE_LR[model] * batch * world_size / 8
    warmup = settings.warmup if settings.warmup is not None else min(1500, iters // 10)
    every = max(1, min(iters, max(50, iters // 10)))
    val_every = settings.val_every if settings.val_every is not None else every
    save_every = settings.save_every if settings.save_every is not None else val_every
    checks = [
        (iters >= 1, f"--iters must be at least 1, got {iters}"),
        (batch >= 1, f"--batch-size must be at least 1, got {batch}"),
        (lr > 0, f"--lr must be positive, got {lr}"),
        (0 <= warmup <= iters, f"--warmup must be between 0 and --iters ({iters}), got {warmup}"),
        (settings.crop >= 32, f"--crop must be at least 32 px, got {settings.crop}"),
        (settings.grad_clip >= 0, f"--grad-clip must be 0 (off) or positive, got {settings.grad_clip}"),
        (val_every >= 1 and save_every >= 1, "--val-every and --save-every must be at least 1"),
        (settings.log_every >= 1, "--log-every must be at least 1"),
        (settings.workers >= 0, f"--workers must be 0 or more, got {settings.workers}"),
        (settings.steps >= 1, f"--steps must be at least 1, got {settings.steps}"),
    ]
    for ok, message in checks:
        if not ok:
            raise OptionError(message)
    check_amp(settings.amp, device)
    return replace(
        settings,
        data=str(Path(settings.data).resolve()),
        model=model,
        iters=iters,
        batch_size=batch,
        lr=lr,
        warmup=warmup,
        val_every=val_every,
        save_every=save_every,
    )


def learning_rate(settings: TrainSettings, iteration: int) -> float:
    """Learning rate for optimizer step `iteration` (0-based): linear warm-up from lr/1000, then poly power 1."""
    peak, warmup, total = settings.lr, settings.warmup or 0, settings.iters
    if iteration < warmup:
        return peak * (1e-3 + (1 - 1e-3) * iteration / warmup)
    return peak * max(0.0, 1 - (iteration - warmup) / max(1, total - warmup))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices and kernels only — none on norms, biases, A_log, D or other
    vectors (ours; DESIGN.md)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name.endswith(("A_log", "bias"))
        (plain if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class IterationBatchSampler(Sampler[list[WindowQuery]]):
    """Yields one batch of window queries per training iteration, from `start` to `stop`.

    The j-th sample drawn over the run (j = (iteration · world + rank) · batch + slot) is query j mod E of
    epoch j div E of a `RandomWindowSampler` (E its epoch length), so iteration i's batch depends on
    (seed, i, rank) only: resuming at i gives exactly the batches an uninterrupted run would have seen.
    """

    def __init__(
        self, windows: RandomWindowSampler, batch: int, start: int, stop: int, rank: int = 0, world: int = 1
    ) -> None:
        self.windows, self.batch, self.start, self.stop = windows, batch, start, stop
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[WindowQuery]]:
        per_epoch = self.windows.num_samples
        for iteration in range(self.start, self.stop):
            first = (iteration * self.world + self.rank) * self.batch
            queries = []
            for j in range(first, first + self.batch):
                self.windows.set_epoch(j // per_epoch)
                queries.append(self.windows.query(j % per_epoch))
            yield queries


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


class _StopRequest:
    """Ctrl-C / SIGTERM during training ask the loop to stop after the current iteration (a second Ctrl-C
    interrupts at once); the loop saves a resumable state first."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


def threading_is_main() -> bool:
    """Signal handlers can only be installed from the main thread."""
    import threading

    return threading.current_thread() is threading.main_thread()


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    created: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1), or use one already initialised."""
    if dist.is_available() and dist.is_initialized():
        info = _Dist(dist.get_rank(), dist.get_world_size())
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() and device_name != "cpu" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        info = _Dist(dist.get_rank(), dist.get_world_size(), created=True)
    else:
        info = _Dist()
    return info, resolve_device(device_name)


def new_run_dir(settings: TrainSettings, root: Path | None = None) -> Path:
    """`runs/<data folder>-<preset>` under the current folder, numbered (-2, -3, …) so no run is overwritten."""
    root = root if root is not None else Path.cwd() / "runs"
    base = f"{Path(settings.data).name or 'data'}-{settings.model}"
    candidate, n = root / base, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate


def _agree_on_run_dir(settings: TrainSettings, info: _Dist) -> Path:
    """Rank 0 picks (and checks) the run folder and tells the others, so they cannot race it to a name."""
    choice: list[str | None] = [None, None]  # folder, error
    if info.main:
        try:
            run_dir = Path(settings.out) if settings.out else new_run_dir(settings)
            _check_out(run_dir)
            choice = [str(run_dir), None]
        except OptionError as exc:
            choice = [None, str(exc)]
    if info.world > 1:
        dist.broadcast_object_list(choice, src=0)
    if choice[1] is not None:
        raise OptionError(choice[1])
    return Path(choice[0])


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError(
            f"run folder '{out}' exists and is not empty; resume it with --resume {out}, or choose another --out"
        )


def _normalisation(settings: TrainSettings, layout) -> tuple[Normalisation, str]:
    """The normalisation and where it came from: --stats file, the dataset's constants, or computed now."""
    if settings.stats is not None:
        data = load_settings_file(settings.stats)
        norm = data.get("normalisation", data)
        try:
            return Normalisation.from_dict(norm), f"from {settings.stats}"
        except (KeyError, TypeError, ValueError):
            raise OptionError(
                f"'{settings.stats}' holds no normalisation (opt_mean, opt_std, sar_mean, sar_std); "
                "write one with `mdseg stats --data DIR --json`"
            ) from None
    if layout.normalisation is not None:
        return layout.normalisation, f"the {layout.kind} dataset's published constants"
    from mdseg.data.stats import band_stats

    stats = band_stats(layout, sar_scale=settings.sar_scale)
    return stats.normalisation(), "computed on the training split"


def _val_layout(settings: TrainSettings, train_layout):
    """The validation split: --val-split, else `val` when the dataset has one, else None (no validation)."""
    if settings.val_split is not None:
        return find_dataset(
            settings.data, settings.val_split, opt_bands=settings.opt_bands, sar_bands=settings.sar_bands
        )
    if train_layout.split is None:
        return None
    try:
        return find_dataset(settings.data, "val", opt_bands=settings.opt_bands, sar_bands=settings.sar_bands)
    except DatasetError:
        return None


def _state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Model and optimizer state as flat tensors + JSON (safetensors holds tensors only)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{index}.{slot}"] = value.detach().cpu().contiguous().clone()
    return tensors, {"param_groups": opt["param_groups"]}


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """Write the resumable state atomically: weights, optimizer moments and `info` (iteration, best, …)."""
    tensors, extra = _state_tensors(model, optimizer)
    meta = {"format": STATE_FORMAT, **info, **extra}
    with AtomicOutputs(overwrite=True) as outputs:
        save_file(tensors, str(outputs.reserve(path)), metadata={"mdseg_state": json.dumps(meta)})


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what `save_state` wrote into `model` and `optimizer`; returns its info."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["mdseg_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except FileNotFoundError:
        raise MdsegError(
            f"no resumable state '{path}'; the run never saved one (it stopped before its first save)"
        ) from None
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise MdsegError(f"resumable state '{path}' is damaged or not mdseg's ({exc})") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


class _Logger:
    """metrics.jsonl, curves.png and TensorBoard (when installed), on rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, resume_at: int) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.history: list[dict[str, Any]] = []
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # resumed: keep what the run logged up to its saved iteration
            for line in self.path.read_text().splitlines():
                record = json.loads(line)
                if record.get("iter", 0) <= resume_at:
                    self.history.append(record)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.history.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "iter":
                    self.tb.add_scalar(key, value, record["iter"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_curves(history: list[dict[str, Any]], path: Path) -> bool:
    """Training loss and validation mIoU against iteration, as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train = [r for r in history if "loss" in r]
    val = [r for r in history if r.get("val_miou") is not None]
    fig, loss_ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        loss_ax.plot([r["iter"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1, label="loss")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    loss_ax.grid(alpha=0.3)
    if val:
        miou_ax = loss_ax.twinx()
        miou_ax.plot([r["iter"] for r in val], [r["val_miou"] for r in val], "o-", color="tab:red", label="val mIoU")
        miou_ax.set_ylabel("validation mIoU", color="tab:red")
        miou_ax.set_ylim(0, 1)
    fig.tight_layout()
    with AtomicOutputs(overwrite=True) as outputs:
        fig.savefig(outputs.reserve(path), format="png")
    plt.close(fig)
    return True


@torch.no_grad()
def validate(
    model: nn.Module, dataset: SegmentationDataset, window: int, steps: int, seed: int, device: torch.device, amp: str
) -> ConfusionMatrix:
    """Confusion matrix of `model` over every window of the validation split, shared across ranks (summed)."""
    classes = len(dataset.layout.classes.names)
    cm = ConfusionMatrix(classes)
    sampler = GridWindowSampler(dataset.sizes, window)
    was_training = model.training
    model.eval()
    try:
        for n, query in enumerate(sampler):
            item = dataset[query]
            generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + n)
            with autocast(device, amp):
                logits = model.predict(
                    item["opt"][None].to(device), item["sar"][None].to(device), steps=steps, generator=generator
                )
            cm.update(item["label"].numpy(), logits.argmax(1)[0].cpu().numpy())
    finally:
        model.train(was_training)
    return all_reduce(cm)


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
    say = say or (lambda text: None)
    dist_info, device = _init_distributed(settings.device)
    try:
        with cpu_threads(settings.threads):
            return _train(settings, resume, progress, say, on_iteration, dist_info, device)
    finally:
        if dist_info.created:
            dist.destroy_process_group()


def _train(
    settings: TrainSettings,
    resume: str | Path | None,
    progress: bool,
    say: Callable[[str], None],
    on_iteration: Callable[[int], None] | None,
    dist_info: _Dist,
    device: torch.device,
) -> TrainResult:
    from mdseg.models.segmentor import build_model

    main = dist_info.main
    note = say if main else (lambda text: None)
    if resume is not None:
        run_dir = Path(resume)
        stored = TrainSettings.from_dict(load_settings_file(run_dir / CONFIG_FILE), source=str(run_dir / CONFIG_FILE))
        # a resumed run keeps its settings; only a longer (or shorter) --iters is taken from the command line
        settings = replace(
            stored, iters=settings.iters or stored.iters, device=settings.device, threads=settings.threads
        )
        if not (run_dir / STATE_FILE).is_file():
            raise MdsegError(f"'{run_dir}' has no resumable state ({STATE_FILE}); it cannot be resumed")
    settings = resolve_settings(settings, device, dist_info.world)
    if resume is None:
        run_dir = _agree_on_run_dir(settings, dist_info)
    settings = replace(settings, out=str(run_dir.resolve()))

    layout = find_dataset(settings.data, settings.split, opt_bands=settings.opt_bands, sar_bands=settings.sar_bands)
    normalisation, norm_source = _normalisation(settings, layout)
    train_set = SegmentationDataset(
        layout, normalisation, augment=Augment(crop=settings.crop), sar_scale=settings.sar_scale
    )
    val_layout = _val_layout(settings, layout)
    val_set = (
        SegmentationDataset(val_layout, normalisation, sar_scale=settings.sar_scale) if val_layout is not None else None
    )
    classes = layout.classes
    note(
        f"data: {layout.root} ({layout.kind}, split {layout.split or 'all'}: {len(layout.samples)} files; "
        f"validation: {f'{len(val_layout.samples)} files' if val_layout else 'none (no val split)'}); "
        f"normalisation: {norm_source}"
    )
    note(
        f"model {settings.model}, {settings.iters} iterations at batch {settings.batch_size}"
        f"{f' × {dist_info.world} processes' if dist_info.world > 1 else ''}, lr {settings.lr:.3g}, "
        f"warm-up {settings.warmup}, crops {settings.crop} px, device {device}; run folder {run_dir}"
    )

    torch.manual_seed(settings.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(settings.model, len(layout.opt_bands), len(layout.sar_bands), len(classes.names)).to(device)
    prepare_model(model, device, compile=settings.compile)  # channels-last on CUDA; compiles the per-tile parts
    optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.999))
    start, best, best_iter = 0, None, None
    if resume is not None:
        info = load_state(run_dir / STATE_FILE, model, optimizer)
        start, best, best_iter = int(info["iteration"]), info.get("best_miou"), info.get("best_iter")
        note(f"resuming {run_dir} at iteration {start} of {settings.iters}")
    if start >= settings.iters:
        raise OptionError(f"run '{run_dir}' already did {start} of {settings.iters} iterations; pass a larger --iters")

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with AtomicOutputs(overwrite=True) as outputs:
            outputs.reserve(run_dir / CONFIG_FILE).write_text(json.dumps(settings.to_dict(), indent=2) + "\n")
    model.train()
    net: nn.Module = model
    if dist_info.world > 1:
        if device.type == "cuda":  # batch statistics over all GPUs, as MMSegmentation's SyncBN (CUDA only)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.amp == "fp16")

    windows = RandomWindowSampler(train_set.sizes, 2 * settings.crop, seed=settings.seed, num_replicas=1, rank=0)
    batches = IterationBatchSampler(
        windows, settings.batch_size, start, settings.iters, dist_info.rank, dist_info.world
    )
    loader = DataLoader(
        train_set,
        batch_sampler=batches,
        num_workers=settings.workers,
        collate_fn=_collate,
        worker_init_fn=_ignore_stop_signals,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # its own generator: DataLoader must not draw from torch's global RNG (that would shift the run on resume)
        generator=torch.Generator().manual_seed(settings.seed),
    )
    logger = _Logger(run_dir, main, start)
    description = train_set.description()
    meta_base = dict(
        config=model.config,
        **{k: v for k, v in description.checkpoint_fields().items() if k != "provenance"},
        tile=settings.crop,
        steps=settings.steps,
    )
    data_provenance = description.to_dict()
    validation_record = (
        {
            "data": str(val_layout.root),
            "split": val_layout.split,
            "opt_bands": list(val_layout.opt_bands),
            "sar_bands": list(val_layout.sar_bands),
        }
        if val_layout is not None
        else None
    )

    def checkpoint_meta(iteration: int, miou: float | None) -> CheckpointMeta:
        return CheckpointMeta(
            **meta_base,
            provenance={
                "trained_with": "mdseg train",
                "run": str(run_dir),
                "iteration": iteration,
                "val_miou": miou,
                "settings": settings.to_dict(),
                "data": data_provenance,
                "validation": validation_record,
                "normalisation_source": norm_source,
                "command": " ".join(sys.argv),
            },
        )

    def save_all(iteration: int, miou: float | None, is_best: bool) -> None:
        if not main:
            return
        save_state(
            run_dir / STATE_FILE,
            model,
            optimizer,
            {"iteration": iteration, "best_miou": best, "best_iter": best_iter, "seed": settings.seed},
        )
        save_checkpoint(run_dir / LAST_CHECKPOINT, model, checkpoint_meta(iteration, miou))
        if is_best or val_set is None:
            save_checkpoint(run_dir / BEST_CHECKPOINT, model, checkpoint_meta(iteration, miou))
        plot_curves(logger.history, run_dir / CURVES_FILE)

    started = time.perf_counter()
    iteration, last_miou, interrupted = start, None, False
    window_loss: list[dict[str, torch.Tensor]] = []  # detached loss terms, read back once per log line
    window_time: list[dict[str, float]] = []
    with _StopRequest() as stop, _progress_bar(progress and main, settings.iters, start) as advance:
        batches_left = iter(loader)
        while True:
            fetch_started = time.perf_counter()
            try:
                batch = next(batches_left)
            except StopIteration:
                break
            except Exception:
                if not stop.requested:
                    raise
                # Ctrl-C reaches the DataLoader workers too; the weights are those of the last finished iteration
                save_all(iteration, last_miou, False)
                interrupted = True
                note(_stopped(iteration, run_dir))
                break
            step_started = time.perf_counter()
            torch.manual_seed(_iteration_seed(settings.seed, dist_info.rank, iteration))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(settings, iteration)
            opt_t = batch["opt"].to(device, non_blocking=True)
            sar_t = batch["sar"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            with autocast(device, settings.amp):
                losses = net(opt_t, sar_t, label)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if settings.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            loss_value = float(losses["loss"].detach())
            if not math.isfinite(loss_value):
                raise MdsegError(
                    f"the loss became {loss_value} at iteration {iteration}; lower --lr (now {settings.lr:.3g}) "
                    "or keep --grad-clip on"
                )
            # data_wait: seconds the step waited for its batch (the loader falls behind when this is not small)
            window_loss.append({k: v.detach() for k, v in losses.items()})
            window_time.append(
                {"data_wait": step_started - fetch_started, "step_time": time.perf_counter() - fetch_started}
            )
            if iteration % settings.log_every == 0 or iteration == settings.iters:
                # one device-to-host copy for the window's loss terms, not one per term per iteration
                terms = {k: torch.stack([w[k] for w in window_loss]).float().mean().item() for k in window_loss[0]}
                times = {k: float(np.mean([w[k] for w in window_time])) for k in window_time[0]}
                elapsed = time.perf_counter() - started
                record = {**terms, **times}
                record.update(iter=iteration, lr=learning_rate(settings, iteration - 1), seconds=round(elapsed, 2))
                logger.log(record)
                window_loss.clear()
                window_time.clear()
            advance(iteration, loss_value, learning_rate(settings, iteration - 1))

            is_best = False
            if dist_info.world > 1 and (
                iteration % min(settings.val_every, settings.save_every) == 0 or iteration == settings.iters
            ):
                _share_buffers(model)
            if val_set is not None and (iteration % settings.val_every == 0 or iteration == settings.iters):
                cm = validate(model, val_set, 2 * settings.crop, settings.steps, settings.seed, device, settings.amp)
                metrics = compute_metrics(cm.matrix)
                last_miou = None if math.isnan(metrics.miou) else float(metrics.miou)
                logger.log({"iter": iteration, "val_miou": last_miou, "val_oa": _finite(metrics.oa)})
                if last_miou is not None and (best is None or last_miou > best):
                    best, best_iter, is_best = last_miou, iteration, True
                note(f"iteration {iteration}: val mIoU {_fmt(last_miou)} (best {_fmt(best)} at {best_iter})")
            if iteration % settings.save_every == 0 or iteration == settings.iters or is_best:
                save_all(iteration, last_miou, is_best)
            if on_iteration is not None:
                on_iteration(iteration)
            if _stop_everywhere(stop.requested, dist_info):
                interrupted = iteration < settings.iters
                if interrupted:
                    save_all(iteration, last_miou, False)
                    note(_stopped(iteration, run_dir))
                break
    logger.close()
    return TrainResult(
        run_dir=run_dir,
        iteration=iteration,
        seconds=time.perf_counter() - started,
        best_miou=best,
        last_checkpoint=run_dir / LAST_CHECKPOINT if main else None,
        best_checkpoint=run_dir / BEST_CHECKPOINT if main else None,
        interrupted=interrupted,
        history=logger.history,
        model=model,
    )


def _stopped(iteration: int, run_dir: Path) -> str:
    return f"stopped at iteration {iteration}; saved a resumable state — continue with `mdseg train --resume {run_dir}`"


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM (which reach the whole process group, e.g. from a batch
    scheduler) to the main process: it finishes the iteration, saves, and shuts them down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _share_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics on CPU, where SyncBN is not available):
    DDP broadcasts them only at the start of each forward, so each rank's last update would otherwise differ."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _collate(items: list[dict]) -> dict[str, Any]:
    return {
        "opt": torch.stack([i["opt"] for i in items]),
        "sar": torch.stack([i["sar"] for i in items]),
        "label": torch.stack([i["label"] for i in items]),
        "name": [i["name"] for i in items],
    }


def _iteration_seed(seed: int, rank: int, iteration: int) -> int:
    return int(np.random.SeedSequence((seed, rank, iteration)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _stop_everywhere(requested: bool, info: _Dist) -> bool:
    """Whether any rank was asked to stop (all ranks must stop at the same iteration)."""
    if info.world == 1:
        return requested
    flag = torch.tensor([1.0 if requested else 0.0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, start: int) -> Iterator[Callable[[int, float, float], None]]:
    if not enabled:
        yield lambda iteration, loss, lr: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}  {task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("train", total=total, completed=start, loss=float("nan"), lr=0.0, rate="")
        t0, first = time.perf_counter(), start

        def advance(iteration: int, loss: float, lr: float) -> None:
            rate = (iteration - first) / max(1e-9, time.perf_counter() - t0)
            bar.update(task, completed=iteration, loss=loss, lr=lr, rate=f"{rate:.2f} it/s")

        yield advance


__all__ = [
    "RECIPES",
    "IterationBatchSampler",
    "TrainResult",
    "TrainSettings",
    "learning_rate",
    "load_state",
    "merge_settings",
    "parameter_groups",
    "plot_curves",
    "resolve_settings",
    "save_state",
    "train",
    "validate",
]
