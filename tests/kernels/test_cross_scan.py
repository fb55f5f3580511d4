"""SS2D cross-scan (map -> four sequences) and cross-merge (its adjoint)."""

from __future__ import annotations

import pytest
import torch

from mdseg.kernels import cross_merge, cross_scan

SHAPES = [(3, 3), (2, 5), (5, 2), (1, 4), (4, 1), (1, 1)]


def _map(h: int, w: int, b: int = 2, c: int = 3, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_cross_scan_has_four_directions_of_length_h_times_w(h, w):
    assert cross_scan(_map(h, w)).shape == (2, 4, 3, h * w)


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_merge_of_scan_is_four_times_the_map(h, w):
    x = _map(h, w)
    merged = cross_merge(cross_scan(x), h, w)
    torch.testing.assert_close(merged, 4 * x.reshape(2, 3, h * w), rtol=0, atol=0)


@pytest.mark.parametrize(("h", "w"), [(2, 3), (3, 2), (4, 4)])
def test_directions_read_row_major_column_major_and_their_reverses(h, w):
    # Pixel (i, j) holds its row-major index i*w + j, so each sequence spells out its own visiting order.
    index = torch.arange(h * w).reshape(1, 1, h, w)
    rows = [i * w + j for i in range(h) for j in range(w)]
    cols = [i * w + j for j in range(w) for i in range(h)]
    seqs = cross_scan(index)[0, :, 0].tolist()
    assert seqs == [rows, cols, rows[::-1], cols[::-1]]


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_cross_merge_is_the_adjoint_of_cross_scan(h, w):
    x = _map(h, w, dtype=torch.float64)
    y = torch.randn(2, 4, 3, h * w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x.reshape(2, 3, h * w) * cross_merge(y, h, w)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("h", "w"), [(3, 2), (2, 4)])
def test_cross_scan_passes_float64_gradcheck(h, w):
    x = _map(h, w, b=1, c=2, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(cross_scan, (x,))


@pytest.mark.parametrize(("h", "w"), [(3, 2), (2, 4)])
def test_cross_merge_passes_float64_gradcheck(h, w):
    y = torch.randn(1, 4, 2, h * w, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(lambda t: cross_merge(t, h, w), (y.requires_grad_(True),))


def test_cross_merge_rejects_a_length_that_is_not_h_times_w():
    with pytest.raises(ValueError, match="cross_merge expects"):
        cross_merge(torch.zeros(1, 4, 2, 6), 2, 4)


def test_cross_merge_rejects_other_than_four_directions():
    with pytest.raises(ValueError, match="cross_merge expects"):
        cross_merge(torch.zeros(1, 2, 2, 6), 2, 3)
