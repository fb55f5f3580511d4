"""Training augmentation applied identically to optical, SAR and label: random resize, crop, flips, 90° turns.

Follows the released training pipeline (MMSegmentation's Resize ratio 0.5–2.0, RandomCrop with cat_max_ratio
0.75, RandomFlip) with vertical flips and 90° rotations added (ours). Inputs are normalised already, so padding
the images with 0 pads with the band mean; labels are padded with `IGNORE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mdseg.data.classes import IGNORE


@dataclass(frozen=True)
class Augment:
    """Augmentation settings; call with tensors and a seeded `torch.Generator`.

    Args:
        crop: side of the output in pixels; smaller inputs are padded (images 0, label `IGNORE`).
        scale: range of the random resize factor (uniform).
        cat_max_ratio: a crop is redrawn (up to `crop_tries` times) while one class covers more than this share
            of its labelled pixels; 1.0 turns the check off.
        hflip, vflip: flip left-right / top-bottom with probability 0.5.
        rotate90: turn by a uniformly drawn multiple of 90°.
    """

    crop: int = 256
    scale: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    crop_tries: int = 10
    hflip: bool = True
    vflip: bool = True
    rotate90: bool = True

    def __call__(
        self, opt: Tensor, sar: Tensor, label: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Augment optical (Co, h, w), SAR (Cs, h, w) float32 and label (h, w) int64 alike; returns
        (Co, crop, crop), (Cs, crop, crop), (crop, crop)."""
        factor = self.scale[0] + (self.scale[1] - self.scale[0]) * _uniform(generator)
        opt, sar, label = resize(opt, sar, label, factor)
        opt, sar, label = random_crop(opt, sar, label, self.crop, self.cat_max_ratio, self.crop_tries, generator)
        opt, sar, label = pad_to(opt, sar, label, self.crop)
        flips = [d for d, on in ((-1, self.hflip), (-2, self.vflip)) if on and _uniform(generator) < 0.5]
        if flips:
            opt, sar, label = (x.flip(flips) for x in (opt, sar, label))
        if self.rotate90:
            k = int(torch.randint(0, 4, (1,), generator=generator))
            opt, sar, label = (torch.rot90(x, k, dims=(-2, -1)) for x in (opt, sar, label))
        return opt.contiguous(), sar.contiguous(), label.contiguous()


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def resize(opt: Tensor, sar: Tensor, label: Tensor, factor: float) -> tuple[Tensor, Tensor, Tensor]:
    """Scale all three by `factor` (sizes rounded, at least 1 px): bilinear for images, nearest for the label.
    Both use pixel-centre alignment (align_corners=False, "nearest-exact") so they stay registered."""
    h, w = label.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return opt, sar, label
    opt = F.interpolate(opt[None], size=size, mode="bilinear", align_corners=False)[0]
    sar = F.interpolate(sar[None], size=size, mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return opt, sar, label


def random_crop(
    opt: Tensor, sar: Tensor, label: Tensor, crop: int, cat_max_ratio: float, tries: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """A crop of at most crop × crop pixels; redrawn while one class dominates (see `Augment`), keeping the last."""
    h, w = label.shape
    ch, cw = min(crop, h), min(crop, w)
    for _ in range(max(1, tries)):
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        part = label[top : top + ch, left : left + cw]
        if cat_max_ratio >= 1.0:
            break
        counts = torch.bincount(part[part != IGNORE].flatten())
        counts = counts[counts > 0]
        if counts.numel() > 1 and counts.max() < cat_max_ratio * counts.sum():
            break
    window = (slice(top, top + ch), slice(left, left + cw))
    return opt[:, window[0], window[1]], sar[:, window[0], window[1]], label[window]


def pad_to(opt: Tensor, sar: Tensor, label: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pad bottom and right up to size × size: images with 0, the label with `IGNORE`."""
    h, w = label.shape
    pad = (0, max(0, size - w), 0, max(0, size - h))
    if pad[1] == 0 and pad[3] == 0:
        return opt, sar, label
    return F.pad(opt, pad, value=0.0), F.pad(sar, pad, value=0.0), F.pad(label, pad, value=IGNORE)
