"""Tile grid, blending window and tile blender."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdseg.geo.blend import TileBlender
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


def blend_whole(tiles, height, width, channels, values_of, weight_of):
    """Reference: blend every tile into whole-region float32 accumulators, in the same order."""
    acc = np.zeros((channels, height, width), dtype=np.float32)
    wsum = np.zeros((height, width), dtype=np.float32)
    for t in tiles:
        weight = weight_of(t)
        acc[:, t.y : t.y + t.height, t.x : t.x + t.width] += values_of(t) * weight
        wsum[t.y : t.y + t.height, t.x : t.x + t.width] += weight
    covered = wsum > 0
    return np.divide(acc, wsum, out=np.zeros_like(acc), where=covered), covered


def assemble(blocks, height, width, channels):
    """Paste released blocks into a region, checking each pixel is released exactly once."""
    values = np.zeros((channels, height, width), dtype=np.float32)
    covered = np.zeros((height, width), dtype=bool)
    seen = np.zeros((height, width), dtype=np.int32)
    for b in blocks:
        n, m = b.covered.shape
        values[:, b.row : b.row + n, b.col : b.col + m] = b.values
        covered[b.row : b.row + n, b.col : b.col + m] = b.covered
        seen[b.row : b.row + n, b.col : b.col + m] += 1
    assert (seen == 1).all()
    return values, covered


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 160),
    width=st.integers(1, 160),
    tile=st.integers(2, 64),
    data=st.data(),
)
def test_blender_equals_whole_region_blending_for_any_grid_and_skipped_tiles(height, width, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    tiles = tile_grid(height, width, tile, overlap)
    skipped = data.draw(st.sets(st.integers(0, len(tiles) - 1), max_size=len(tiles)))
    rng = np.random.default_rng(len(tiles))
    noise = {(t.row, t.col): rng.random((3, t.height, t.width), dtype=np.float32) for t in tiles}
    run = [t for i, t in enumerate(tiles) if i not in skipped]
    blender = TileBlender(tiles, height, width, channels=3)
    blocks = [b for t in run for b in blender.add(t, noise[t.row, t.col], weight_window(t, overlap))]
    blocks += blender.finish()
    values, covered = assemble(blocks, height, width, 3)
    want, want_covered = blend_whole(
        run, height, width, 3, lambda t: noise[t.row, t.col], lambda t: weight_window(t, overlap)
    )
    np.testing.assert_array_equal(covered, want_covered)
    np.testing.assert_array_equal(values, want)  # same per-pixel order of float32 sums: bit-identical


def test_blender_memory_grows_with_width_only_through_the_overlap_rows():
    def nbytes(width):
        return TileBlender(tile_grid(4096, width, 256, 64), 4096, width, channels=4).nbytes

    # 4 channels + weight sum, float32, over the 64 overlap rows of each extra column.
    assert nbytes(16384) - nbytes(4096) == 5 * 4 * 64 * (16384 - 4096)


def test_blender_releases_blocks_left_to_right_as_tiles_arrive():
    height, width = 50, 30
    tiles = tile_grid(height, width, 20, 6)
    blender = TileBlender(tiles, height, width, channels=2)
    released = []
    for t in tiles:
        value = np.full((2, t.height, t.width), [[[t.row + 1.0]], [[1.0]]], dtype=np.float32)
        blocks = list(blender.add(t, value, weight_window(t, 6)))
        assert all(b.row == t.y and b.col <= t.x for b in blocks)  # finished up to this tile, nothing more
        released += blocks
    released += blender.finish()
    values, _ = assemble(released, height, width, 2)
    np.testing.assert_allclose(values[1], 1.0, rtol=1e-6)  # a constant stays constant under blending
    assert values[0, 0, 0] == 1.0 and values[0, -1, 0] == len({t.row for t in tiles})


def test_blender_refuses_tiles_out_of_grid_order():
    tiles = tile_grid(40, 40, 20, 6)
    blender = TileBlender(tiles, 40, 40, channels=1)
    list(blender.add(tiles[1], np.ones((1, 20, 20), dtype=np.float32), weight_window(tiles[1], 6)))
    with pytest.raises(ValueError, match="after a later tile"):
        list(blender.add(tiles[0], np.ones((1, 20, 20), dtype=np.float32), weight_window(tiles[0], 6)))


def test_blender_leaves_unweighted_pixels_uncovered():
    (t,) = tile_grid(10, 10, 10, 0)
    blender = TileBlender([t], 10, 10, channels=1)
    weight = np.ones((10, 10), dtype=np.float32)
    weight[:, :3] = 0
    (block,) = blender.add(t, np.ones((1, 10, 10), dtype=np.float32), weight)
    assert not block.covered[:, :3].any() and block.covered[:, 3:].all()
    assert (block.values[0, :, :3] == 0).all()
    assert list(blender.finish()) == []
