"""The full model: fused optical + SAR backbone → neck → diffusion head (+ auxiliary head in training)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdseg.config import ModelConfig, preset
from mdseg.errors import MdsegError
from mdseg.models.backbone import FusedBackbone, FusedStage
from mdseg.models.checkpointing import run_block
from mdseg.models.diffusion_head import (
    IGNORE_INDEX,
    T_MAX,
    AuxHead,
    Denoiser,
    DiffusionHead,
    pixel_accuracy,
    segmentation_loss,
    upsample_logits,
)
from mdseg.models.neck import Neck

Generators = torch.Generator | Sequence[torch.Generator] | None


def check_head_config(config: ModelConfig) -> None:
    """Refuse neck/head settings the layers cannot be built with, in one sentence."""
    channels = config.neck_channels
    if not 1 <= config.num_classes < IGNORE_INDEX:
        raise MdsegError(f"num_classes must be 1…{IGNORE_INDEX - 1} (label {IGNORE_INDEX} means ignore)")
    if config.opt_bands < 1 or config.sar_bands < 1:
        raise MdsegError(f"need at least one optical and one SAR band, got {config.opt_bands} and {config.sar_bands}")
    if channels % 4:
        raise MdsegError(f"neck_channels must be a multiple of 4 (sine position features), got {channels}")
    for name in ("gn_groups", "head_heads"):
        if getattr(config, name) < 1 or channels % getattr(config, name):
            raise MdsegError(f"neck_channels {channels} must be a multiple of {name} {getattr(config, name)}")
    if config.head_points < 1 or config.head_layers < 1 or config.head_ffn < 1:
        raise MdsegError("head_points, head_layers and head_ffn must be positive")
    if config.learned_sinusoidal_dim < 2 or config.learned_sinusoidal_dim % 2:
        raise MdsegError(f"learned_sinusoidal_dim must be even and positive, got {config.learned_sinusoidal_dim}")


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad (B, C, H, W) at the bottom and right until H and W are multiples of `multiple`.

    Reflection can add at most size − 1 pixels at a time, so small inputs are padded in several rounds.
    """
    height, width = x.shape[-2:]
    if height < 2 or width < 2:
        raise MdsegError(f"input must be at least 2×2 pixels, got {height}×{width}")
    target_h, target_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    while x.shape[-2:] != (target_h, target_w):
        pad_h = min(target_h - x.shape[-2], x.shape[-2] - 1)
        pad_w = min(target_w - x.shape[-1], x.shape[-1] - 1)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    return x


def draw_latents(shape: tuple[int, ...], batch: int, generator: Generators, like: Tensor) -> Tensor:
    """Standard normal latents (batch, *shape) on `like`'s device and dtype.

    `generator`: None (torch's global one), one generator, or a sequence of exactly `batch` (checked by the
    caller); then item i's latent depends only on generator i, so a batch gives the same latents as its items
    drawn one by one. Drawn on each generator's device, then moved.
    """
    if generator is None:
        noise = torch.randn((batch, *shape), device=like.device)
    elif isinstance(generator, torch.Generator):
        noise = torch.randn((batch, *shape), generator=generator, device=generator.device)
    else:
        noise = torch.stack([torch.randn(shape, generator=g, device=g.device).to(like.device) for g in generator])
    return noise.to(device=like.device, dtype=like.dtype)


class MambaDiffusionSeg(nn.Module):
    """Optical (B, opt_bands, H, W) + SAR (B, sar_bands, H, W) → class logits (B, num_classes, H, W).

    Any H and W: inputs are reflect-padded to a multiple of the backbone stride (32) and outputs cropped.
    """

    checkpoint_activations = False  # the neck's; see `set_activation_checkpointing`

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_head_config(config)
        self.config = config
        self.backbone = FusedBackbone(config)
        self.neck = Neck(config)
        self.head = DiffusionHead(config)
        self.aux_head = AuxHead(config)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute the activations of every backbone block (VSS, DCF, DS-S4), the neck and every denoiser
        layer in backward instead of keeping them, when training with autograd (`mdseg train
        --checkpoint-activations`).

        Less memory (one block's activations at a time), one more forward of those blocks per step. Weights,
        outputs and gradients are unchanged; eval mode and no_grad (predict, validation) never recompute.
        """
        for module in self.modules():
            if isinstance(module, MambaDiffusionSeg | FusedStage | Denoiser):
                module.checkpoint_activations = enabled

    def extract_features(self, opt: Tensor, sar: Tensor) -> Tensor:
        """Backbone + neck on the padded inputs → (B, neck_channels, ⌈H/32⌉·8, ⌈W/32⌉·8) at stride 4."""
        stride = self.backbone.stride
        features = self.backbone(pad_to_multiple(opt, stride), pad_to_multiple(sar, stride))
        return run_block(self.neck, self.checkpoint_activations, features)

    def forward(self, opt: Tensor, sar: Tensor, label: Tensor) -> dict[str, Tensor]:
        """The training forward (so DistributedDataParallel sees it): see `forward_train`."""
        return self.forward_train(opt, sar, label)

    def forward_train(self, opt: Tensor, sar: Tensor, label: Tensor) -> dict[str, Tensor]:
        """Losses for a batch with label (B, H, W) int64 (classes 0…K−1, 255 = ignore).

        Draws a diffusion time t ~ U(0, 0.999) and Gaussian noise per sample from torch's global generator.
        """
        if label.shape != (opt.shape[0], *opt.shape[-2:]):
            raise MdsegError(f"label must be (B, H, W) = {(opt.shape[0], *opt.shape[-2:])}, got {tuple(label.shape)}")
        feature = self.extract_features(opt, sar)
        t = torch.rand(feature.shape[0], device=feature.device) * T_MAX
        return self.head_losses(feature, label, t, torch.randn_like(feature))

    def head_losses(self, feature: Tensor, label: Tensor, t: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """Losses for neck feature (B, C, h, w), label (B, H ≤ 4h, W ≤ 4w), times t (B,), noise (B, C, h, w).

        `loss_decode`: cross-entropy of the denoiser's logits (averaged over all label pixels, ignored ones
        included, as the release); `loss_aux`: the auxiliary head's, times aux_weight; `loss`: their sum;
        `acc` / `acc_aux`: percentage of non-ignored pixels right (detached).
        """
        size = label.shape[-2:]
        decode = upsample_logits(self.head.train_logits(feature, label, t, noise), size)
        aux = upsample_logits(self.aux_head(feature), size)
        loss_decode = segmentation_loss(decode, label)
        loss_aux = self.config.aux_weight * segmentation_loss(aux, label)
        with torch.no_grad():
            acc, acc_aux = pixel_accuracy(decode, label), pixel_accuracy(aux, label)
        return {
            "loss": loss_decode + loss_aux,
            "loss_decode": loss_decode,
            "loss_aux": loss_aux,
            "acc": acc,
            "acc_aux": acc_aux,
        }

    @torch.no_grad()
    def predict(
        self,
        opt: Tensor,
        sar: Tensor,
        steps: int = 3,
        generator: Generators = None,
        samples: int = 1,
        return_disagreement: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Class logits (B, K, H, W) by DDIM sampling; call `eval()` first.

        Backbone and neck run once; each of the `steps` DDIM steps runs only the head. `generator`: one
        `torch.Generator`, or one per batch item (then a batch equals its items predicted one by one), or None
        for torch's global one. `samples` > 1 averages the logits of independent draws; with
        `return_disagreement` also returns (B, H, W) in [0, 1]: the fraction of draws whose argmax differs
        from the averaged logits' argmax.
        """
        if samples < 1:
            raise MdsegError(f"samples must be at least 1, got {samples}")
        if isinstance(generator, Sequence) and len(generator) != opt.shape[0]:
            raise MdsegError(f"got {len(generator)} generators for a batch of {opt.shape[0]}; pass one per item")
        size = opt.shape[-2:]
        feature = self.extract_features(opt, sar)
        batch, channels, height, width = feature.shape
        latent = draw_latents((samples, channels, height, width), batch, generator, feature).flatten(0, 1)
        logits = self.sample_head(feature.repeat_interleave(samples, dim=0), latent, steps)
        logits = logits.view(batch, samples, -1, height, width)
        out = upsample_logits(logits.mean(dim=1), size)
        if not return_disagreement:
            return out
        winner = out.argmax(dim=1)
        differ = torch.zeros(winner.shape, device=out.device)
        for s in range(samples):  # one draw at a time: full-resolution logits of all draws would be large
            differ += upsample_logits(logits[:, s], size).argmax(dim=1) != winner
        return out, differ / samples

    def sample_head(self, feature: Tensor, latent: Tensor, steps: int) -> Tensor:
        """DDIM from latent (B, C, h, w) given neck feature (B, C, h, w) → stride-4 logits (B, K, h, w)."""
        return self.head.sample(feature, latent, steps)


def build_model(
    preset_or_config: str | ModelConfig,
    opt_bands: int | None = None,
    sar_bands: int | None = None,
    num_classes: int | None = None,
) -> MambaDiffusionSeg:
    """A new model from a preset name (`tiny`, `small`, `paper`) or a ModelConfig, band/class counts overridden."""
    overrides = {"opt_bands": opt_bands, "sar_bands": sar_bands, "num_classes": num_classes}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(preset_or_config, str):
        config = preset(preset_or_config, **overrides)
    elif isinstance(preset_or_config, ModelConfig):
        config = replace(preset_or_config, **overrides)
    else:
        raise MdsegError(f"expected a preset name or a ModelConfig, got {type(preset_or_config).__name__}")
    return MambaDiffusionSeg(config)


__all__ = ["MambaDiffusionSeg", "build_model"]
