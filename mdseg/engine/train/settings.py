"""What a training run is asked to do: `TrainSettings`, the named recipes, and how settings are merged and resolved.

Settings come, in increasing priority, from the defaults, a config file (a run's `config.json`), a recipe and the
values given (`merge_settings`); `resolve_settings` then fills every "choose for me" (None) for the device and
checks every value, in one place, so the loop only ever sees a complete, valid `TrainSettings`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, get_args

import torch

from mdseg.engine.accel import check_amp
from mdseg.errors import OptionError
from mdseg.geo.sar import SarScale

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
SAR_SCALES: tuple[str, ...] = get_args(SarScale)


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run needs; None means "choose for me" (see `resolve_settings`).

    `iters`: optimizer steps; `batch_size`: samples per step per process; `lr`: peak learning rate; `warmup`:
    linear warm-up iterations (then poly power 1 to 0); `crop`: training crop side in px (also the tile size
    stored for predict); `grad_clip`: max gradient norm (0: off); `val_every` / `save_every`: iterations
    between validations / checkpoints; `split_seed`, `val_fraction`, `test_fraction`: the scene-level split
    drawn for a dataset without splits (seed default: `seed`; see `mdseg.data.splits`); `steps`: DDIM steps
    for validation and the checkpoint's default; `sar_scale`: the SAR files' scale (auto, db or linear);
    `stats`: a JSON file from `mdseg stats --json` with the normalisation (else the dataset's published
    constants, else computed on the training split); `checkpoint_activations`: recompute the backbone blocks'
    and denoiser layers' activations in backward instead of keeping them (less memory, more time per step).
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
    checkpoint_activations: bool = False
    seed: int = 0
    val_every: int | None = None
    save_every: int | None = None
    log_every: int = 10
    workers: int = 2
    split: str | None = None
    val_split: str | None = None
    split_seed: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.1
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
    val_every = settings.val_every if settings.val_every is not None else max(1, iters // 10)  # 10 % of the run
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
        (
            0 <= settings.val_fraction < 1
            and 0 <= settings.test_fraction < 1
            and settings.val_fraction + settings.test_fraction < 1,
            f"--val-fraction and --test-fraction must be in [0, 1) and leave scenes to train on, got "
            f"{settings.val_fraction:g} and {settings.test_fraction:g}",
        ),
        (
            settings.sar_scale in SAR_SCALES,
            f"--sar-scale must be one of {', '.join(SAR_SCALES)}, got {settings.sar_scale!r}",
        ),
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
        split_seed=settings.split_seed if settings.split_seed is not None else settings.seed,
    )


__all__ = [
    "BASE_LR",
    "RECIPES",
    "SAR_SCALES",
    "TrainSettings",
    "load_settings_file",
    "merge_settings",
    "resolve_settings",
]
