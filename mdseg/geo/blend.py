"""Weighted blending of overlapping tile predictions, finished block by block as the tiles advance, and how
visible the tile edges stay in the blended result (`seam_stats`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from mdseg.geo.tiles import Tile


@dataclass(frozen=True)
class BlendedBlock:
    """A finished block of the region: `values` (C, n, m) float32 weighted means, `covered` (n, m) bool.

    (`row`, `col`) is the region pixel of its top-left corner. Pixels no tile weighted (nodata, skipped tiles)
    have `covered` False and `values` 0.
    """

    row: int
    col: int
    values: np.ndarray
    covered: np.ndarray


class TileBlender:
    """Accumulate tile predictions (C, h, w) weighted by a window over a `tile_grid`, and hand out finished blocks.

    Tiles arrive in the grid's row-major order; tiles that are never added (all nodata) count as passed when a
    later tile arrives or at `finish()`. Once tile (r, c) is in, the rows above the next tile row's top and
    the columns left of the next tile's left edge can no longer change: that block is normalised by the summed
    weights and handed out. So only two float32 buffers live: the open columns of the current tile row
    ((C+1) × tile height × 2 tile widths) and, full width, the rows the next tile row overlaps
    ((C+1) × vertical overlap × width). Memory therefore grows with the width only through the overlap rows,
    not through whole tile rows, and not at all with the height. Accumulation is float32 whatever the model's
    dtype, and each pixel sums its tiles in row-major order, as a whole-scene accumulator would.
    """

    def __init__(self, tiles: Sequence[Tile], height: int, width: int, channels: int) -> None:
        self.height, self.width, self.channels = height, width, channels
        self._ys = sorted({t.y for t in tiles})
        self._xs = sorted({t.x for t in tiles})
        self._th, self._tw = tiles[0].height, tiles[0].width
        carry = max((y0 + self._th - y1 for y0, y1 in pairwise(self._ys)), default=0)
        # Channel C holds the weight sum, so carrying and shifting move values and weights together.
        self._carry = np.zeros((channels + 1, carry, width), dtype=np.float32)
        self._acc = np.zeros((channels + 1, self._th, min(2 * self._tw, width)), dtype=np.float32)
        self._scratch = np.empty((channels, self._th, self._tw), dtype=np.float32)
        self._next = 0  # row-major index of the next grid position not yet passed
        self._col0 = 0  # region column of accumulator column 0
        self._opened = 0  # region columns below this are in the accumulator (current tile row)
        self._done = 0  # region columns below this are finished (current tile row)

    @property
    def nbytes(self) -> int:
        """Bytes held by the float32 accumulators (the open columns and the carried overlap rows); 0 after
        `finish()`."""
        return self._carry.nbytes + self._acc.nbytes + self._scratch.nbytes

    def add(self, t: Tile, values: np.ndarray, weight: np.ndarray) -> Iterator[BlendedBlock]:
        """Add `values` (C, h, w) weighted by `weight` (h, w) (zero = unused) for tile `t`; yield finished blocks.

        Tiles must come in row-major grid order; positions skipped since the last call are passed first. Blocks
        are yielded one at a time (and the tile is added only once they are consumed) so that a long run of
        skipped tiles never holds more than one block.
        """
        index = t.row * len(self._xs) + t.col
        if index < self._next:
            raise ValueError(f"tile ({t.row}, {t.col}) arrived after a later tile of the grid")
        yield from self._pass(index)
        yield self._step(index, values, weight)
        self._next = index + 1

    def finish(self) -> Iterator[BlendedBlock]:
        """Pass every remaining grid position, yielding the last finished blocks; then free the accumulators.

        Freeing them here keeps a run's later steps (the COG conversion) from stacking on top of them.
        """
        yield from self._pass(len(self._ys) * len(self._xs))
        self._carry = self._acc = self._scratch = np.empty((0, 0, 0), dtype=np.float32)

    def _pass(self, until: int) -> Iterator[BlendedBlock]:
        """Pass the grid positions before `until` that no tile was added for."""
        while self._next < until:
            index, self._next = self._next, self._next + 1
            yield self._step(index, None, None)

    def _step(self, index: int, values: np.ndarray | None, weight: np.ndarray | None) -> BlendedBlock:
        r, c = divmod(index, len(self._xs))
        y, x, c_end = self._ys[r], self._xs[c], self._xs[c] + self._tw
        if c == 0:
            self._col0 = self._opened = self._done = 0
        if c_end > self._col0 + self._acc.shape[2]:
            # Shift the open, unfinished columns to the front to make room for this tile.
            live = self._opened - self._done
            self._acc[:, :, :live] = self._acc[:, :, self._done - self._col0 : self._opened - self._col0]
            self._col0 = self._done
        new = slice(self._opened - self._col0, c_end - self._col0)
        self._acc[:, :, new] = 0
        if r > 0:
            # Rows the tile rows above already weighted: start from what they left in the carry.
            n = self._ys[r - 1] + self._th - y
            self._acc[:, :n, new] = self._carry[:, :n, self._opened : c_end]
        self._opened = c_end
        if values is not None:
            k = self.channels
            cols = slice(x - self._col0, c_end - self._col0)
            np.multiply(values, weight, out=self._scratch)
            self._acc[:k, :, cols] += self._scratch
            self._acc[k, :, cols] += weight
        return self._finish_block(r, c)

    def _finish_block(self, r: int, c: int) -> BlendedBlock:
        """Normalise the finished columns of tile row `r` after position (r, c); carry its overlap rows down."""
        last_row = r + 1 == len(self._ys)
        end = self.width if c + 1 == len(self._xs) else self._xs[c + 1]
        rows = self._th if last_row else self._ys[r + 1] - self._ys[r]
        cols = slice(self._done - self._col0, end - self._col0)
        acc, wsum = self._acc[: self.channels, :rows, cols], self._acc[self.channels, :rows, cols]
        covered = wsum > 0
        values = np.divide(acc, wsum, out=np.zeros(acc.shape, dtype=np.float32), where=covered)
        if not last_row:
            self._carry[:, : self._th - rows, self._done : end] = self._acc[:, rows:, cols]
        block = BlendedBlock(row=self._ys[r], col=self._done, values=values, covered=covered)
        self._done = end
        return block


@dataclass(frozen=True)
class SeamStats:
    """How much adjacent pixels of a blended map differ across inner tile edges against inside single tiles.

    Pairs are adjacent pixels (left–right and top–bottom), both covered. Edge pairs lie either side of an inner
    tile edge (where one tile's pixels end or begin); interior pairs lie where exactly one tile covers both
    pixels along their axis (outside every overlap). `*_disagreement`: fraction of pairs whose classes (argmax)
    differ; `*_jump`: mean total-variation distance ½·Σ|p − q| of their probabilities (0–1). A seam shows as
    edge statistics above the interior ones (ratios above 1).
    """

    edge_pairs: int
    interior_pairs: int
    edge_disagreement: float
    interior_disagreement: float
    edge_jump: float
    interior_jump: float

    @property
    def disagreement_ratio(self) -> float:
        """Edge over interior class disagreement (inf when the interior has none but the edges do)."""
        return _ratio(self.edge_disagreement, self.interior_disagreement)

    @property
    def jump_ratio(self) -> float:
        """Edge over interior probability jump."""
        return _ratio(self.edge_jump, self.interior_jump)


def seam_stats(values: np.ndarray, covered: np.ndarray, tiles: Sequence[Tile]) -> SeamStats:
    """`SeamStats` of blended class probabilities `values` (K, H, W) over the (H, W) region that `tiles` (a
    `tile_grid` of it) covered; `covered` (H, W) bool marks the pixels to count (e.g. `BlendedBlock.covered`)."""
    _, height, width = values.shape
    classes = values.argmax(axis=0)
    sums = np.zeros((2, 3), dtype=np.float64)  # (edge, interior) × (pairs, disagreements, jumps)
    for axis, length, starts, size in (
        (1, height, sorted({t.y for t in tiles}), tiles[0].height),
        (2, width, sorted({t.x for t in tiles}), tiles[0].width),
    ):
        if length < 2:
            continue
        edge, interior = _pair_kinds(length, starts, size)
        a, b = _neighbours(axis, length)
        ok = covered[a[1:]] & covered[b[1:]]
        jump = 0.5 * np.abs(values[a] - values[b]).sum(axis=0)
        differ = classes[a[1:]] != classes[b[1:]]
        # Per pair index along the axis: how many pairs, disagreements and the summed jump (over the other axis).
        other = 1 if axis == 1 else 0
        per = np.stack([ok.sum(axis=other), (differ & ok).sum(axis=other), np.where(ok, jump, 0).sum(axis=other)])
        sums[0] += per[:, edge].sum(axis=1)
        sums[1] += per[:, interior].sum(axis=1)
    (ne, de, je), (ni, di, ji) = sums
    return SeamStats(
        edge_pairs=int(ne),
        interior_pairs=int(ni),
        edge_disagreement=float(de / ne) if ne else 0.0,
        interior_disagreement=float(di / ni) if ni else 0.0,
        edge_jump=float(je / ne) if ne else 0.0,
        interior_jump=float(ji / ni) if ni else 0.0,
    )


def _pair_kinds(length: int, starts: Sequence[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the pairs (i, i + 1) of an axis: which straddle an inner tile edge, which one tile covers."""
    cover = np.zeros(length + 1, dtype=np.int64)
    edges = set()
    for s in starts:
        cover[s] += 1
        cover[min(s + size, length)] -= 1
        edges.update(e for e in (s, s + size) if 0 < e < length)
    count = np.cumsum(cover)[:length]
    edge = np.zeros(length - 1, dtype=bool)
    edge[[e - 1 for e in edges]] = True
    interior = (count[:-1] == 1) & (count[1:] == 1) & ~edge
    return edge, interior


def _neighbours(axis: int, length: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index tuples for the first and second pixel of each adjacent pair along `axis` of a (K, H, W) array."""
    first, second = [slice(None)] * 3, [slice(None)] * 3
    first[axis], second[axis] = slice(0, length - 1), slice(1, length)
    return tuple(first), tuple(second)


def _ratio(edge: float, interior: float) -> float:
    if interior > 0:
        return edge / interior
    return 1.0 if edge == 0 else float("inf")
