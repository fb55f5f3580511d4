"""Tile grid, blending window and row-strip blender."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mdseg.geo.blend import RowBlender
from mdseg.geo.tiles import MIN_WEIGHT, tile_grid, tile_starts, weight_window


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 3000), tile=st.integers(1, 600), data=st.data())
def test_tiles_cover_axis_evenly_with_at_least_the_overlap(length, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + min(tile, length) == length  # the last tile ends exactly at the edge
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= tile - overlap).all()
    assert len(gaps) == 0 or gaps.max() - gaps.min() <= 1  # evenly spaced


def test_tiles_know_their_index_and_scene_borders():
    tiles = tile_grid(500, 300, 256, 64)
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(3) for c in range(2)]
    first, last = tiles[0], tiles[-1]
    assert (first.top, first.left, first.bottom, first.right) == (True, True, False, False)
    assert (last.top, last.left, last.bottom, last.right) == (False, False, True, True)
    assert last.y + last.height == 500 and last.x + last.width == 300


def test_small_scene_gets_one_tile_of_its_own_size():
    (t,) = tile_grid(40, 70, 256, 64)
    assert (t.y, t.x, t.height, t.width) == (0, 0, 40, 70)
    assert t.top and t.bottom and t.left and t.right


def test_window_is_smooth_positive_and_flat_on_scene_borders():
    tiles = tile_grid(600, 600, 256, 64)
    corner = weight_window(tiles[0], 64)
    assert corner.min() >= MIN_WEIGHT and corner.max() == 1.0
    assert (corner[0, :100] == 1).all() and (corner[:100, 0] == 1).all()  # top and left are scene borders
    assert corner[-1, 100] < 0.01 and corner[100, -1] < 0.01  # tapered towards the neighbours
    assert np.abs(np.diff(corner[100, :])).max() < 0.05  # no jumps
    middle = weight_window(tiles[4], 64)
    assert middle[0, 128] < 0.01 and middle[128, 0] < 0.01


def test_blender_normalises_by_summed_weights_and_releases_rows_in_bounded_strips():
    height, width = 50, 30
    blender = RowBlender(height, width, channels=2, strip_rows=20)
    tiles = tile_grid(height, width, 20, 6)
    released = []
    for t in tiles:
        released += list(blender.release(t.y))
        value = np.full((2, t.height, t.width), [[[t.row + 1.0]], [[1.0]]], dtype=np.float32)
        blender.add(t.y, t.x, value, weight_window(t, 6))
    released += list(blender.release(height))
    assert [r.row for r in released] == sorted(r.row for r in released)
    assert max(r.values.shape[1] for r in released) <= 20
    values = np.concatenate([r.values for r in released], axis=1)
    assert values.shape == (2, height, width)
    np.testing.assert_allclose(values[1], 1.0, rtol=1e-6)  # a constant stays constant under blending
    assert values[0, 0, 0] == 1.0 and values[0, -1, 0] == len({t.row for t in tiles})


def test_blender_leaves_unweighted_pixels_uncovered():
    blender = RowBlender(10, 10, channels=1, strip_rows=10)
    weight = np.ones((10, 10), dtype=np.float32)
    weight[:, :3] = 0
    blender.add(0, 0, np.ones((1, 10, 10), dtype=np.float32), weight)
    (rows,) = blender.release(10)
    assert not rows.covered[:, :3].any() and rows.covered[:, 3:].all()
    assert (rows.values[0, :, :3] == 0).all()
