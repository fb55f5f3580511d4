"""Validation during training: the model's confusion matrix over every window of the validation split."""

from __future__ import annotations

import torch
from torch import nn

from mdseg.data import GridWindowSampler, SegmentationDataset
from mdseg.engine.accel import autocast
from mdseg.metrics import ConfusionMatrix, all_reduce


@torch.no_grad()
def validate(
    model: nn.Module, dataset: SegmentationDataset, window: int, steps: int, seed: int, device: torch.device, amp: str
) -> ConfusionMatrix:
    """Confusion matrix of `model` over every window of the validation split, shared across ranks (summed).

    `window`: window side in px; `steps`: DDIM steps; window n's sampling noise is seeded from (`seed`, n), so a
    validation is the same whenever it runs. The model is left in the mode it was in.
    """
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


__all__ = ["validate"]
