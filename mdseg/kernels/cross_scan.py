"""SS2D cross-scan and cross-merge: one H×W map <-> four 1-D sequences.

Direction 0 reads the map row-major, 1 column-major, 2 and 3 are the reverses of 0 and 1.
`cross_merge` is the adjoint of `cross_scan`: it un-flips, un-transposes and sums the four,
so `cross_merge(cross_scan(x))` is 4·x. Both are plain tensor ops (no loops over pixels) and
differentiable by autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cross_scan(x: Tensor) -> Tensor:
    """(b, c, h, w) -> (b, 4, c, h·w): the four scan orders of the map."""
    b, c, h, w = x.shape
    rows = x.reshape(b, c, h * w)
    cols = x.transpose(2, 3).reshape(b, c, h * w)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(y: Tensor, h: int, w: int) -> Tensor:
    """(b, 4, c, h·w) -> (b, c, h·w): every direction's sequence put back in row-major order, summed."""
    b, k, c, length = y.shape
    if k != 4 or length != h * w:
        raise ValueError(f"cross_merge expects (b, 4, c, {h * w}), got {tuple(y.shape)}")
    forward = y[:, 0:2] + y[:, 2:4].flip(-1)
    cols = forward[:, 1].reshape(b, c, w, h).transpose(2, 3).reshape(b, c, length)
    return forward[:, 0] + cols


def to_scan_order(x: Tensor) -> Tensor:
    """Per-direction maps (b, 4, c, h, w) -> (b, 4, c, h·w), direction k read in its own scan order.

    For quantities computed per pixel on the map with direction-specific weights (the SS2D projections):
    equal to computing them on `cross_scan`'s sequences, without the four copies of the wide input.
    """
    b, k, c, h, w = x.shape
    if k != 4:
        raise ValueError(f"to_scan_order expects (b, 4, c, h, w), got {tuple(x.shape)}")
    rows = x[:, 0::2].reshape(b, 2, c, h * w)
    cols = x[:, 1::2].transpose(-1, -2).reshape(b, 2, c, h * w)
    return torch.stack([rows[:, 0], cols[:, 0], rows[:, 1].flip(-1), cols[:, 1].flip(-1)], dim=1)
