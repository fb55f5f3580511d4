"""seam_stats: neighbour contrast of a blended map across inner tile edges against inside single tiles."""

from __future__ import annotations

import numpy as np

from mdseg.geo.blend import seam_stats
from mdseg.geo.tiles import tile_grid


def one_hot(classes: np.ndarray, k: int) -> np.ndarray:
    return (np.arange(k)[:, None, None] == classes[None]).astype(np.float32)


def test_a_step_at_a_tile_edge_is_an_edge_contrast_with_none_inside():
    tiles = tile_grid(64, 64, 32, 0)  # edges at row 32 and column 32
    classes = np.zeros((64, 64), dtype=np.int64)
    classes[:, 32:] = 1
    s = seam_stats(one_hot(classes, 2), np.ones((64, 64), dtype=bool), tiles)
    # Left–right pairs across column 32 differ (64 of them); top–bottom pairs across row 32 do not (64).
    assert s.edge_pairs == 128 and s.edge_disagreement == 0.5 and s.edge_jump == 0.5
    assert s.interior_disagreement == 0 and s.interior_jump == 0
    assert s.disagreement_ratio == float("inf")


def test_overlap_bands_are_neither_edge_nor_interior():
    tiles = tile_grid(1, 100, 60, 20)  # one row of tiles at columns 0 and 40: the band 40–59 is seen twice
    values = one_hot(np.zeros((1, 100), dtype=np.int64), 2)
    s = seam_stats(values, np.ones((1, 100), dtype=bool), tiles)
    assert s.edge_pairs == 2  # pairs (39, 40) and (59, 60)
    assert s.interior_pairs == 39 + 39  # (0, 1)…(38, 39) and (60, 61)…(98, 99)


def test_uncovered_pixels_are_not_counted():
    tiles = tile_grid(8, 8, 4, 0)
    classes = np.zeros((8, 8), dtype=np.int64)
    classes[:, 4:] = 1
    covered = np.ones((8, 8), dtype=bool)
    covered[:, 4] = False  # the column right of the edge is nodata
    s = seam_stats(one_hot(classes, 2), covered, tiles)
    assert s.edge_disagreement == 0  # only the top–bottom pairs across row 4 remain, all alike
