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
    added can no longer change and are released by `release(y)`. The accumulators hold `strip_rows` rows
    (the tile height) of the region's full width, so memory is C × strip_rows × width float32, independent
    of the region's height. Accumulation is float32 whatever the model's dtype.
    """

    def __init__(self, height: int, width: int, channels: int, strip_rows: int) -> None:
        self.height, self.width, self.channels = height, width, channels
        self.strip_rows = min(strip_rows, height)
        self._acc = np.zeros((channels, self.strip_rows, width), dtype=np.float32)
        self._wsum = np.zeros((self.strip_rows, width), dtype=np.float32)
        self._scratch = np.empty((channels, self.strip_rows, width), dtype=np.float32)
        self._base = 0  # region row held in accumulator row 0

    @property
    def next_row(self) -> int:
        """First region row not yet released."""
        return self._base

    def add(self, y: int, x: int, values: np.ndarray, weight: np.ndarray) -> None:
        """Add `values` (C, h, w) with per-pixel `weight` (h, w) at region pixel (y, x); zero weight = unused.

        Releases nothing itself: call `release(y)` first when `y` moved down.
        """
        c, h, w = values.shape
        r = y - self._base
        if r < 0 or r + h > self.strip_rows:
            raise ValueError(
                f"tile rows {y}..{y + h} fall outside the open strip {self._base}..{self._base + self.strip_rows}"
            )
        scratch = self._scratch[:c, :h, :w]
        np.multiply(values, weight, out=scratch)
        self._acc[:, r : r + h, x : x + w] += scratch
        self._wsum[r : r + h, x : x + w] += weight

    def release(self, until: int) -> Iterator[BlendedRows]:
        """Finish rows up to (excluding) region row `until`, in chunks of at most `strip_rows` rows.

        No tile added later may touch these rows.
        """
        end = min(until, self.height)
        while self._base < end:
            n = min(end - self._base, self.strip_rows)
            wsum = self._wsum[:n]
            covered = wsum > 0
            values = np.divide(self._acc[:, :n], wsum, out=np.zeros_like(self._acc[:, :n]), where=covered)
            # Slide the strip up by n rows (numpy buffers the overlapping copy) and zero the rows that come free.
            keep = self.strip_rows - n
            self._acc[:, :keep] = self._acc[:, n:]
            self._wsum[:keep] = self._wsum[n:]
            self._acc[:, keep:] = 0
            self._wsum[keep:] = 0
            row, self._base = self._base, self._base + n
            yield BlendedRows(row=row, values=values, covered=covered)
