"""The fused SS2D scan (`ss2d_scan`) equals cross-scan -> selective scan -> cross-merge on every backend."""

import pytest
import torch

from mdseg.kernels import cross_merge, cross_scan, selective_scan_reference, ss2d_scan, to_scan_order

SHAPES = [(1, 1), (5, 7), (16, 16), (3, 20)]


def _inputs(h: int, w: int, n: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    b, d, length = 2, 6, h * w

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    u = randn(b, d, h, w)
    delta = randn(b, 4, d, length, scale=0.5)
    A = -(torch.rand(4 * d, n, generator=g) + 0.3).to(dtype)
    return u, delta, A, randn(b, 4, n, length), randn(b, 4, n, length), randn(4 * d), randn(4 * d)


def _composed(u, delta, A, B, C, D, bias):
    """The specification: the reference scan on the four materialised scan orders, merged."""
    b, d, h, w = u.shape
    y = selective_scan_reference(
        cross_scan(u).reshape(b, 4 * d, h * w), delta.reshape(b, 4 * d, h * w), A, B, C, D, None, bias, True
    )
    return cross_merge(y.view(b, 4, d, h * w), h, w)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("hw", SHAPES)
def test_ss2d_scan_matches_the_composed_reference(backend, n, hw):
    inputs = _inputs(*hw, n)
    expected = _composed(*inputs)
    got = ss2d_scan(*inputs, delta_softplus=True, backend=backend)
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("hw", [(5, 7), (8, 8)])
def test_ss2d_scan_cpu_gradients_match_the_reference(n, hw):
    inputs = _inputs(*hw, n, seed=1)
    ref_args = [t.clone().requires_grad_() for t in inputs]
    cpu_args = [t.clone().requires_grad_() for t in inputs]
    ref = _composed(*ref_args)
    got = ss2d_scan(*cpu_args, delta_softplus=True, backend="cpu")
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    (ref * weight).sum().backward()
    (got * weight).sum().backward()
    for name, r, c in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), ref_args, cpu_args, strict=True):
        scale = max(1.0, r.grad.abs().max().item())
        assert (r.grad - c.grad).abs().max().item() <= 1e-4 * scale, name


def test_ss2d_scan_cpu_passes_gradcheck_in_float64():
    inputs = [t.requires_grad_() for t in _inputs(2, 3, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: ss2d_scan(*a, delta_softplus=True, backend="cpu"), inputs)


def test_ss2d_scan_cpu_returns_bfloat16_for_bfloat16_inputs():
    inputs = _inputs(8, 8, 1, dtype=torch.bfloat16)
    got = ss2d_scan(*inputs, backend="cpu")
    expected = _composed(*[t.float() for t in inputs])
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max().item() <= 2e-2 * max(1.0, expected.abs().max().item())


def test_to_scan_order_reads_each_direction_map_in_its_own_order():
    x = torch.arange(2 * 4 * 3 * 5 * 7, dtype=torch.float32).view(2, 4, 3, 5, 7)
    expected = torch.stack([cross_scan(x[:, k])[:, k] for k in range(4)], dim=1)
    assert torch.equal(to_scan_order(x), expected)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("hw", [(5, 7), (16, 16)])
def test_ss2d_scan_with_delta_proj_equals_the_projected_delta(backend, n, hw):
    u, _, A, B, C, D, bias = _inputs(*hw, n, seed=3)
    g = torch.Generator().manual_seed(4)
    b, d, h, w = u.shape
    low, proj = torch.randn(b, 4, 3, h * w, generator=g), 0.3 * torch.randn(4, d, 3, generator=g)
    expected = _composed(u, torch.matmul(proj, low), A, B, C, D, bias)
    with torch.no_grad():  # the cpu backend projects inside the scan only without autograd
        got = ss2d_scan(u, low, A, B, C, D, bias, True, backend=backend, delta_proj=proj)
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= 1e-4 * scale


def test_ss2d_scan_with_delta_proj_passes_gradients_to_the_projection():
    u, _, A, B, C, D, bias = _inputs(5, 7, 1, seed=5)
    g = torch.Generator().manual_seed(6)
    low = torch.randn(2, 4, 2, 35, generator=g).requires_grad_()
    proj = torch.randn(4, 6, 2, generator=g).requires_grad_()
    ss2d_scan(u, low, A, B, C, D, bias, True, backend="cpu", delta_proj=proj).sum().backward()
    assert low.grad is not None and proj.grad is not None and proj.grad.abs().sum() > 0


@pytest.mark.parametrize("batch", [1, 3])
def test_ss2d_scan_cpu_reads_channels_last_maps_in_channel_blocks_with_the_same_numbers(batch):
    # 37 channels: the kernel's work units of up to 16 channels end in a partial block; a channels-last map is
    # read and written a block of channels per pixel, a contiguous one a channel row at a time
    g = torch.Generator().manual_seed(7)
    d, h, w = 37, 6, 9
    u = torch.randn(batch, d, h, w, generator=g)
    delta = 0.5 * torch.randn(batch, 4, d, h * w, generator=g)
    A = -(torch.rand(4 * d, 1, generator=g) + 0.3)
    B, C = torch.randn(batch, 4, 1, h * w, generator=g), torch.randn(batch, 4, 1, h * w, generator=g)
    D, bias = torch.randn(4 * d, generator=g), torch.randn(4 * d, generator=g)
    expected = _composed(u, delta, A, B, C, D, bias)
    contiguous = ss2d_scan(u, delta, A, B, C, D, bias, True, backend="cpu")
    channels_last = ss2d_scan(u.to(memory_format=torch.channels_last), delta, A, B, C, D, bias, True, backend="cpu")
    assert torch.equal(channels_last, contiguous)
    assert (contiguous - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
