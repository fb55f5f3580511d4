"""Training: settings, the loop, validation, checkpoints, resume, DDP (see `mdseg.engine.train.loop`)."""

from mdseg.engine.train.loop import (
    RECIPES,
    IterationBatchSampler,
    TrainResult,
    TrainSettings,
    learning_rate,
    load_state,
    merge_settings,
    parameter_groups,
    plot_curves,
    resolve_settings,
    save_state,
    train,
    validate,
)

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
