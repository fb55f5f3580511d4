"""Neck: FPN over the four stage features, then all levels merged into one map at stride 4.

Matches the release's `FPN` + `MultiStageMerging` pair: no activations anywhere, convolutions without bias
(GroupNorm follows each one), nearest top-down upsampling, bilinear merging (align_corners False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdseg.config import ModelConfig


class ConvNorm(nn.Sequential):
    """Conv (no bias) followed by GroupNorm, no activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(groups, out_channels)


class FPN(nn.Module):
    """Feature pyramid: lateral 1×1 per stage, top-down nearest sum, 3×3 output per level."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, groups: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(ConvNorm(c, channels, 1, groups) for c in in_channels)
        self.output = nn.ModuleList(ConvNorm(channels, channels, 3, groups) for _ in in_channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """features[i]: (B, in_channels[i], H_i, W_i), finest first → list of (B, channels, H_i, W_i)."""
        laterals = [conv(x) for conv, x in zip(self.lateral, features, strict=True)]
        # coarse to fine, each level receiving the already-summed coarser one
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:])
        return [conv(x) for conv, x in zip(self.output, laterals, strict=True)]


class Neck(nn.Module):
    """FPN then multi-stage merging: four stage features → one (B, neck_channels, H/4, W/4) map."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels, groups = config.neck_channels, config.gn_groups
        self.fpn = FPN(config.stage_dims, channels, groups)
        self.merge = ConvNorm(channels * len(config.stage_dims), channels, 1, groups)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # the release's neck init
                nn.init.xavier_uniform_(m.weight)

    def forward(self, features: list[Tensor]) -> Tensor:
        """features[i]: (B, stage_dims[i], H/4/2^i, W/4/2^i) → (B, neck_channels, H/4, W/4)."""
        levels = self.fpn(features)
        size = levels[0].shape[2:]
        # the finest level is already at stride 4 (bilinear to its own size is the identity); the others are
        # resized from channels-last memory, where PyTorch's CPU kernel reads and writes them in place (from
        # NCHW it makes two channels-last copies around the same kernel); same numbers, cat's output is NCHW
        resized = [levels[0]] + [
            F.interpolate(
                x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", align_corners=False
            )
            for x in levels[1:]
        ]
        return self.merge(torch.cat(resized, dim=1))
