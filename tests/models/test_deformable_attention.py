"""The fused deformable sampling (`deformable_sample`) against its reference (`deformable_sample_reference`,
mmcv's grid_sample arithmetic): outputs and gradients, on random inputs and on the edge cases of zero padding.

Tolerance, as max abs error over each tensor: <= 2e-6 x max(1e-3, max |reference|) in float32 (the two paths
add the same products in another order; measured about 3e-7), <= 1e-12 x … in float64.
"""

from __future__ import annotations

import pytest
import torch

from mdseg.models.deformable_attention import (
    DeformableAttention,
    deformable_sample,
    deformable_sample_reference,
    reference_points,
)

F32_REL = 2e-6
F64_REL = 1e-12


def sampling_inputs(
    batch: int,
    height: int,
    width: int,
    heads: int = 2,
    head_dim: int = 4,
    points: int = 3,
    spread: float = 2.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(value, reference, offsets, weights, size) for every query of a (height, width) map; offsets are
    normal with `spread` pixels' standard deviation, so some points fall off the map."""
    gen = torch.Generator().manual_seed(seed)
    num = height * width
    value = torch.randn(batch, num, heads, head_dim, generator=gen, dtype=dtype)
    offsets = spread * torch.randn(batch, num, heads, points, 2, generator=gen, dtype=dtype)
    weights = torch.randn(batch, num, heads, points, generator=gen, dtype=dtype).softmax(-1)
    return value, reference_points(height, width).to(dtype), offsets, weights, (height, width)


def assert_scaled_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1e-3, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel:g} x {scale:.3g}"


def assert_paths_agree(inputs: tuple, rel: float = F32_REL) -> None:
    """Same outputs, and same gradients for value, offsets and weights under one random output gradient."""
    value, reference, offsets, weights, size = inputs
    expected = deformable_sample_reference(value, reference, offsets, weights, size)
    assert_scaled_close(deformable_sample(value, reference, offsets, weights, size), expected, rel, "output")
    grad_out = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=expected.dtype)
    grads = {}
    for name, sample in (("reference", deformable_sample_reference), ("fused", deformable_sample)):
        leaves = [t.detach().clone().requires_grad_() for t in (value, offsets, weights)]
        out = sample(leaves[0], reference, leaves[1], leaves[2], size)
        grads[name] = torch.autograd.grad(out, leaves, grad_out)
    for what, fused, ref in zip(("value", "offsets", "weights"), grads["fused"], grads["reference"], strict=True):
        assert_scaled_close(fused, ref, rel, f"gradient of {what}")


@pytest.mark.parametrize(
    ("batch", "height", "width", "heads", "head_dim", "points"),
    [(1, 8, 8, 2, 4, 4), (2, 5, 7, 4, 8, 3), (3, 6, 4, 1, 3, 2), (2, 16, 16, 8, 32, 4)],
    ids=["square", "rectangular", "one-head", "paper-heads"],
)
def test_fused_sampling_matches_reference_on_random_inputs(batch, height, width, heads, head_dim, points) -> None:
    assert_paths_agree(sampling_inputs(batch, height, width, heads, head_dim, points))


def test_points_far_off_the_map_read_zeros() -> None:
    value, reference, offsets, weights, size = sampling_inputs(2, 5, 6)
    far = offsets.sign() * 100 + offsets  # every point at least 100 pixels out, in x and y
    out = deformable_sample(value, reference, far, weights, size)
    assert torch.equal(out, torch.zeros_like(out))
    assert_paths_agree((value, reference, far, weights, size))


@pytest.mark.parametrize("batch", [1, 2])
def test_points_on_pixel_centres_edges_and_the_map_border_match(batch: int) -> None:
    # offsets in half pixels land exactly on pixel centres, on the edges between pixels and on the map
    # border (x = -0.5 and W - 0.5 in pixel coordinates), where bilinear weights are exactly 0 or 1 and
    # the gradients one-sided: both paths must pick the same side
    value, reference, _, weights, size = sampling_inputs(batch, 8, 4, points=4)
    gen = torch.Generator().manual_seed(2)
    offsets = torch.randint(-20, 21, (*weights.shape, 2), generator=gen).float() * 0.5
    assert_paths_agree((value, reference, offsets, weights, size))


def test_one_pixel_map_matches_reference() -> None:
    assert_paths_agree(sampling_inputs(2, 1, 1, spread=0.7))


def test_one_row_map_matches_reference() -> None:
    assert_paths_agree(sampling_inputs(2, 1, 9, spread=1.5))


def test_float64_paths_agree_to_rounding() -> None:
    assert_paths_agree(sampling_inputs(2, 5, 7, dtype=torch.float64), rel=F64_REL)


def test_fused_gradients_pass_gradcheck() -> None:
    value, reference, _, weights, size = sampling_inputs(1, 3, 4, heads=2, head_dim=2, points=2, seed=3)
    # a query's pixel coordinate is its column (row) plus the offset: fractional parts in [0.2, 0.8] keep
    # the finite differences off the pixel-grid lines, where the bilinear weights have kinks
    gen = torch.Generator().manual_seed(4)
    whole = torch.randint(-3, 4, (*weights.shape, 2), generator=gen)
    offsets = whole + 0.2 + 0.6 * torch.rand(whole.shape, generator=gen, dtype=torch.float64)
    leaves = [t.double().requires_grad_() for t in (value, offsets, weights)]
    torch.autograd.gradcheck(lambda v, o, w: deformable_sample(v, reference.double(), o, w, size), leaves)


def test_layer_runs_the_fused_path_with_the_reference_numbers() -> None:
    torch.manual_seed(0)
    layer = DeformableAttention(channels=16, heads=4, points=2)
    with torch.no_grad():  # random (not init) offsets and weights, so points spread and fall off the map
        layer.sampling_offsets.weight.normal_(std=0.5)
        layer.attention_weights.weight.normal_(std=0.5)
    height, width = 5, 6
    query = torch.randn(2, height * width, 16)
    value = torch.randn(2, height * width, 16)
    reference = reference_points(height, width)
    out = layer(query, value, reference, (height, width))
    values = layer.value_proj(value).view(2, height * width, 4, 4)
    offsets = layer.sampling_offsets(query).view(2, -1, 4, 2, 2)
    weights = layer.attention_weights(query).view(2, -1, 4, 2).softmax(-1)
    expected = layer.output_proj(deformable_sample_reference(values, reference, offsets, weights, (height, width)))
    assert_scaled_close(out, expected, F32_REL, "layer output")


def _ran_cpu_kernel(fn) -> tuple[torch.Tensor, bool]:
    """fn()'s result and whether the numba sampling kernel ran (its profiler range appears)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, any(e.name == "deformable_sample_cpu" for e in prof.events())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_kernel_runs_without_autograd_and_matches_the_torch_path(dtype) -> None:
    value, reference, offsets, weights, size = sampling_inputs(3, 7, 5, heads=4, head_dim=5, points=4, dtype=dtype)
    with torch.no_grad():
        out, ran = _ran_cpu_kernel(lambda: deformable_sample(value, reference, offsets, weights, size))
    assert ran
    leaves = [t.clone().requires_grad_() for t in (value, offsets, weights)]  # autograd: the PyTorch path
    torch_path, ran = _ran_cpu_kernel(lambda: deformable_sample(leaves[0], reference, leaves[1], leaves[2], size))
    assert not ran
    assert_scaled_close(out, torch_path.detach(), F32_REL if dtype == torch.float32 else F64_REL, "kernel output")


def test_cpu_kernel_skips_points_whose_offsets_are_not_finite() -> None:
    value, reference, offsets, weights, size = sampling_inputs(2, 6, 6, points=4)
    bad = offsets.clone()
    bad[0, 3, 1, 2, 0] = float("nan")
    bad[1, 10, 0, 1, 1] = float("inf")
    zeroed = weights.clone()
    zeroed[0, 3, 1, 2] = 0.0
    zeroed[1, 10, 0, 1] = 0.0
    with torch.no_grad():
        got = deformable_sample(value, reference, bad, weights, size)
        expected = deformable_sample_reference(value, reference, offsets, zeroed, size)
    assert torch.isfinite(got).all()
    assert_scaled_close(got, expected, F32_REL, "output with non-finite offsets")


def test_layer_in_inference_softmaxes_in_the_cpu_kernel_with_the_reference_numbers() -> None:
    torch.manual_seed(0)
    layer = DeformableAttention(channels=16, heads=4, points=3)
    with torch.no_grad():
        layer.sampling_offsets.weight.normal_(std=0.5)
        layer.attention_weights.weight.normal_(std=2.0)  # far from uniform, so the softmax matters
        height, width = 6, 7
        query = torch.randn(2, height * width, 16)
        value = torch.randn(2, height * width, 16)
        reference = reference_points(height, width)
        out, ran = _ran_cpu_kernel(lambda: layer(query, value, reference, (height, width)))
        values = layer.value_proj(value).view(2, height * width, 4, 4)
        offsets = layer.sampling_offsets(query).view(2, -1, 4, 3, 2)
        weights = layer.attention_weights(query).view(2, -1, 4, 3).softmax(-1)
        sampled = deformable_sample_reference(values, reference, offsets, weights, (height, width))
        expected = layer.output_proj(sampled)
    assert ran
    assert_scaled_close(out, expected, F32_REL, "layer output")
