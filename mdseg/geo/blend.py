"""Weighted blending of overlapping tile predictions in a strip of rows that slides down the region."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlendedRows:
    """Finished rows of the region: `values` (C, n, width) float32 weighted means, `covered` (n, width) bool.

    `row` is the region row of the first one. Pixels no tile weighted (nodata, skipped tiles) have
    `covered` False and `values` 0.
    """

    row: int
    values: np.ndarray
    covered: np.ndarray


class RowBlender:
    """Accumulate tile predictions (C, h, w) weighted by a window, and hand out finished rows.

    Tiles must arrive in row-major order with non-decreasing top row `y`; rows above the top of the tile being
    added can no longer change and are released by `release(y)`. The accumulators are a ring of `strip_rows`
    rows (the tile height) of the region's full width: region row r lives in ring row r mod `strip_rows`, so
    releasing rows moves nothing and memory is C × strip_rows × width float32, independent of the region's
    height. Rows are released `release_rows` at a time, which bounds the per-release temporaries (here and in
    whoever consumes the rows) at C × release_rows × width. Accumulation is float32 whatever the model's dtype.
    """

    def __init__(self, height: int, width: int, channels: int, strip_rows: int, release_rows: int = 64) -> None:
        self.height, self.width, self.channels = height, width, channels
        self.strip_rows = min(strip_rows, height)
        self.release_rows = max(1, min(release_rows, self.strip_rows))
        self._acc = np.zeros((channels, self.strip_rows, width), dtype=np.float32)
        self._wsum = np.zeros((self.strip_rows, width), dtype=np.float32)
        self._scratch: np.ndarray | None = None  # (C, strip_rows, tile width), made on first use
        self._base = 0  # first region row not yet released

    @property
    def next_row(self) -> int:
        """First region row not yet released."""
        return self._base

    def add(self, y: int, x: int, values: np.ndarray, weight: np.ndarray) -> None:
        """Add `values` (C, h, w) with per-pixel `weight` (h, w) at region pixel (y, x); zero weight = unused.

        Releases nothing itself: call `release(y)` first when `y` moved down.
        """
        c, h, w = values.shape
        if y < self._base or y + h > self._base + self.strip_rows:
            raise ValueError(
                f"tile rows {y}..{y + h} fall outside the open strip {self._base}..{self._base + self.strip_rows}"
            )
        if self._scratch is None or self._scratch.shape[0] < c or self._scratch.shape[2] < w:
            self._scratch = np.empty((c, self.strip_rows, w), dtype=np.float32)
        # The tile's rows may wrap around the end of the ring: add the part before and the part after.
        ring = y % self.strip_rows
        first = min(h, self.strip_rows - ring)
        for dst, src, n in ((ring, 0, first), (0, first, h - first)):
            if n == 0:
                continue
            scratch = self._scratch[:c, :n, :w]
            np.multiply(values[:, src : src + n], weight[src : src + n], out=scratch)
            self._acc[:, dst : dst + n, x : x + w] += scratch
            self._wsum[dst : dst + n, x : x + w] += weight[src : src + n]

    def release(self, until: int) -> Iterator[BlendedRows]:
        """Finish rows up to (excluding) region row `until`, in chunks of at most `release_rows` rows.

        No tile added later may touch these rows.
        """
        end = min(until, self.height)
        while self._base < end:
            ring = self._base % self.strip_rows
            n = min(end - self._base, self.strip_rows - ring, self.release_rows)
            wsum = self._wsum[ring : ring + n]
            acc = self._acc[:, ring : ring + n]
            covered = wsum > 0
            values = np.divide(acc, wsum, out=np.zeros(acc.shape, dtype=np.float32), where=covered)
            acc[...] = 0  # the ring rows are free for the rows strip_rows further down
            wsum[...] = 0
            row, self._base = self._base, self._base + n
            yield BlendedRows(row=row, values=values, covered=covered)
