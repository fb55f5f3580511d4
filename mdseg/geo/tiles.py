"""The tile grid over a region and the blending weight window of each tile."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Smallest blending weight (dimensionless): keeps every covered pixel's weight sum above zero, so a pixel
# seen only by the tapered edge of one tile still gets that tile's prediction.
MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class Tile:
    """One tile of a `tile_grid`, in pixels of the tiled region.

    `row`, `col` index the tile in the grid (they seed its noise); `y`, `x`, `height`, `width` give the part
    of the region it covers (smaller than the tile size only when the region is). The `top`, `bottom`,
    `left`, `right` flags mark sides that lie on the region's border, where the weight is not tapered.
    """

    row: int
    col: int
    y: int
    x: int
    height: int
    width: int
    top: bool
    bottom: bool
    left: bool
    right: bool


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets (pixels) of tiles of size `tile` along an axis of `length` px.

    Tiles overlap by at least `overlap` px and are spaced evenly, the first starting at 0 and the last ending
    exactly at `length`; an axis no longer than a tile gets one tile at 0.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    # Integer spacing: consecutive starts differ by floor or ceil of (length − tile)/(count − 1) ≤ tile − overlap.
    return [i * (length - tile) // (count - 1) for i in range(count)]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """All tiles over a (height, width) region in row-major order (row by row, left to right)."""
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    return [
        Tile(
            row=r,
            col=c,
            y=y,
            x=x,
            height=th,
            width=tw,
            top=r == 0,
            bottom=r == len(ys) - 1,
            left=c == 0,
            right=c == len(xs) - 1,
        )
        for r, y in enumerate(ys)
        for c, x in enumerate(xs)
    ]


@lru_cache(maxsize=64)
def _ramp(length: int, taper: int, start: bool, end: bool) -> np.ndarray:
    """1-D weights (length,): a raised-cosine rise over `taper` px at each tapered end, 1 in between."""
    w = np.ones(length, dtype=np.float32)
    n = min(taper, length // 2)
    if n > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(n, dtype=np.float64) + 0.5) / n) ** 2
        rise = rise.astype(np.float32)
        if start:
            w[:n] = rise
        if end:
            w[length - n :] = rise[::-1]
    w.flags.writeable = False
    return w


def weight_window(t: Tile, overlap: int) -> np.ndarray:
    """Blending weights (height, width) float32 in [MIN_WEIGHT, 1] for tile `t`.

    A raised cosine over `overlap` px at every side that overlaps a neighbour; flat (1) on sides on the
    region's border, so border pixels, seen by one tile only, keep full weight.
    """
    wy = _ramp(t.height, overlap, not t.top, not t.bottom)
    wx = _ramp(t.width, overlap, not t.left, not t.right)
    return np.maximum(np.outer(wy, wx), np.float32(MIN_WEIGHT))
