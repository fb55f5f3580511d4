"""The optimizer and its schedule: AdamW with decay on weight matrices only, linear warm-up then poly decay."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mdseg.engine.train.settings import TrainSettings


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


def new_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW over `model`'s parameter groups at the settings' peak rate (the schedule sets each step's)."""
    return torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.999))


def learning_rate(settings: TrainSettings, iteration: int) -> float:
    """Learning rate for optimizer step `iteration` (0-based): linear warm-up from lr/1000, then poly power 1."""
    peak, warmup, total = settings.lr, settings.warmup or 0, settings.iters
    if iteration < warmup:
        return peak * (1e-3 + (1 - 1e-3) * iteration / warmup)
    return peak * max(0.0, 1 - (iteration - warmup) / max(1, total - warmup))


def set_learning_rate(optimizer: torch.optim.Optimizer, settings: TrainSettings, iteration: int) -> None:
    """Give every parameter group the schedule's rate for step `iteration` (0-based)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(settings, iteration)


__all__ = ["learning_rate", "new_optimizer", "parameter_groups", "set_learning_rate"]
