"""The CPU peer for bench_peer.py: a U-Net with a ResNet-18 encoder, as segmentation_models_pytorch builds it.

torchgeo's default segmentation model is `smp.Unet("resnet18", in_channels=5, classes=7)`: what a CPU user
would run instead of mdseg. smp itself cannot run here: it needs torchvision (its ResNet encoders are
torchvision's), PyPI's torchvision 0.28.0 does not load with our pinned torch 2.13.0 CPU build ("operator
torchvision::nms does not exist"), download.pytorch.org is unreachable, and timm, the other source of a
ResNet-18, imports torchvision too (`timm.layers.create_norm`). So this module re-implements the same
architecture in plain PyTorch, written from smp's description of it, layer for layer:

- encoder: ResNet-18 without its classifier — 7×7 stride-2 stem convolution (5 input channels) + BN + ReLU,
  3×3 stride-2 max-pool, four stages of two BasicBlocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2; a
  1×1 stride-2 convolution + BN on the shortcut where the shape changes). Its features are the input, the stem
  (stride 2) and each stage (strides 4, 8, 16, 32).
- decoder: five blocks with (256, 128, 64, 32, 16) channels, no centre block; each upsamples 2× (nearest),
  concatenates the encoder feature of that stride (none for the last block), then two 3×3 convolution (no
  bias) + BN + ReLU layers.
- head: a 3×3 convolution to the classes, at the input's resolution (no upsampling, no activation).

14 335 351 parameters and 11.1 GFLOPs (torch.utils.flop_counter) per 5-band 256×256 tile at 7 classes, as
smp's model. Weights are random: the bench needs its cost, not its answers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 convolution (no bias: BN follows) + BN + ReLU, spatial size kept."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block; `stride` 2 halves the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet18Encoder(nn.Module):
    """ResNet-18 feature extractor; `forward` returns the six features smp's encoders return."""

    widths = (64, 128, 256, 512)

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, channels = [], 64
        for i, width in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels, width, stride), BasicBlock(width, width)))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = (in_channels, 64, *self.widths)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) → features at strides 1, 2, 4, 8, 16, 32 (H and W divisible by 32)."""
        features = [x, self.stem(x)]
        y = self.pool(features[-1])
        for stage in self.stages:
            y = stage(y)
            features.append(y)
        return features


class DecoderBlock(nn.Module):
    """Nearest 2× upsampling, concatenation with the skip feature (if any), two conv-BN-ReLU layers."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UnetResNet18(nn.Module):
    """U-Net over a ResNet-18 encoder: (B, in_channels, H, W) → class logits (B, classes, H, W)."""

    def __init__(
        self, in_channels: int = 5, classes: int = 7, decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    ) -> None:
        super().__init__()
        self.encoder = ResNet18Encoder(in_channels)
        # deepest first; the stride-1 feature (the input itself) is never a skip
        encoder_channels = self.encoder.out_channels[1:][::-1]
        ins = (encoder_channels[0], *decoder_channels[:-1])
        skips = (*encoder_channels[1:], 0)
        self.decoder = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)[1:][::-1]
        y, skips = features[0], features[1:]
        for i, block in enumerate(self.decoder):
            y = block(y, skips[i] if i < len(skips) else None)
        return self.head(y)
