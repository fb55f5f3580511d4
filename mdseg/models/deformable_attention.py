"""Deformable attention over one feature map (the release's multi-scale deformable attention, one level).

Each query predicts, per head, `points` sampling offsets around its reference point and a softmax weight per
point; the head's value map is sampled bilinearly there (zero outside the map) and the weighted samples summed.
Same parameter layout and arithmetic as mmcv 1.7.2's `MultiScaleDeformableAttention` with `num_levels=1`.

The sampling itself comes twice, with one signature (as `mdseg.kernels` pairs each fast path with the reference
it must match): `deformable_sample_reference` is mmcv's `multi_scale_deformable_attn_pytorch` for one level
(`grid_sample` per head and point, then a weighted sum over the points) and is the specification;
`deformable_sample`, which the layer runs, is one fused gather-and-weight pass over the value rows (in
inference on CPU a numba kernel, `mdseg.kernels.deformable_cpu`, that also does the points' softmax).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdseg.kernels.backends import numba_problem


def reference_points(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """Pixel centres of an (height, width) map, normalised to [0, 1]: (height·width, 2) in (x, y), row-major."""
    ys = torch.linspace(0.5, height - 0.5, height, device=device) / height
    xs = torch.linspace(0.5, width - 0.5, width, device=device) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1)


def deformable_sample_reference(
    value: Tensor, reference: Tensor, offsets: Tensor, weights: Tensor, size: tuple[int, int]
) -> Tensor:
    """Weighted sum of bilinear samples of each head's value map: the specification, mmcv's arithmetic.

    value: (B, N, heads, head_dim), the map flattened row-major (N = height·width); reference: (Q, 2)
    normalised (x, y); offsets: (B, Q, heads, points, 2) in pixels of the map, (x, y); weights:
    (B, Q, heads, points), each head's point weights (softmaxed); size: (height, width).
    Returns (B, Q, heads·head_dim). Samples off the map read zeros (grid_sample, align_corners False).
    """
    batch, _, heads, head_dim = value.shape
    queries, points = weights.shape[1], weights.shape[-1]
    height, width = size
    # (B·heads, head_dim, H, W): each head samples its own slice of the channels
    values = value.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)
    # offsets are in pixels of the map: (x, y) divided by (width, height)
    normaliser = torch.tensor([width, height], device=offsets.device)
    locations = reference[None, :, None, None, :] + offsets / normaliser
    # grid_sample's [-1, 1] grid with align_corners False puts pixel centres at (i + 0.5)/size
    grid = (2 * locations - 1).transpose(1, 2).flatten(0, 1)  # (B·heads, Q, points, 2)
    sampled = F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = weights.transpose(1, 2).reshape(batch * heads, 1, queries, points)
    out = (sampled * weights).sum(-1)  # (B·heads, head_dim, Q)
    return out.view(batch, heads * head_dim, queries).transpose(1, 2)


def _source_pixel(reference: Tensor, offset: Tensor, size: int) -> Tensor:
    """Pixel coordinate along one axis, in the reference's float operations: the normalised location, its
    [-1, 1] grid value, then grid_sample's own unnormalisation (g + 1)·size/2 − 0.5 (align_corners False).
    Same operations in the same order, so both paths floor to the same pixel even on exact borders."""
    grid = 2 * (reference[:, None, None] + offset / size) - 1
    return (grid + 1) * (size / 2) - 0.5


def _neighbours(coordinate: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two pixels either side of a coordinate along one axis: their int32 indices, clamped onto the map,
    and their bilinear weights (grid_sample's 1 − t and t), zero where the pixel lies off the map."""
    low = coordinate.floor()
    t = coordinate - low
    # clamped before the cast (no overflow); −2 keeps the high neighbour of a far-off point off the map too
    low_index = low.clamp(-2, size).to(torch.int32)
    high_index = low_index + 1
    low_in, high_in = low_index.clamp(0, size - 1), high_index.clamp(0, size - 1)
    return low_in, high_in, torch.where(low_in == low_index, 1 - t, 0.0), torch.where(high_in == high_index, t, 0.0)


def _cpu_kernel_applies(*tensors: Tensor) -> bool:
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64) or any(t.dtype != dtype or t.device.type != "cpu" for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return numba_problem() is None


def deformable_sample(
    value: Tensor, reference: Tensor, offsets: Tensor, weights: Tensor, size: tuple[int, int]
) -> Tensor:
    """`deformable_sample_reference` as one fused gather-and-weight pass: same arguments, same result.

    Each (query, head) reads 4 neighbouring value rows per point; their bilinear weights, with the point's
    attention weight folded in (zero for neighbours off the map, whose indices are clamped onto it), weight
    one `embedding_bag` sum over the rows of `value` seen as (B·N·heads, head_dim). So neither the
    (B·heads, head_dim, Q, points) samples nor a head-major copy of `value` is ever made, and the output
    rows are already (B, Q, heads·head_dim).

    On CPU, when no input needs a gradient and all are float32 (or all float64), the numba kernel
    `mdseg.kernels.deformable_cpu` does the same in one pass, without the per-point index tensors.
    """
    return _sample(value, reference, offsets, weights, size, softmax=False)


def _sample(
    value: Tensor, reference: Tensor, offsets: Tensor, weights: Tensor, size: tuple[int, int], softmax: bool
) -> Tensor:
    """The one place that picks the sampling path: the numba kernel where `_cpu_kernel_applies`, else PyTorch.
    With `softmax`, weights are the points' logits (B, Q, heads, points), softmaxed over the points first."""
    if _cpu_kernel_applies(value, reference, offsets, weights):  # the kernel softmaxes as it samples
        from mdseg.kernels.deformable_cpu import deformable_sample_cpu

        return deformable_sample_cpu(value, reference, offsets, weights, size, softmax=softmax)
    if softmax:
        # over the points as a non-last axis: PyTorch's CPU softmax over a last axis this short (4 in every
        # preset) runs one row at a time, twice as slow as its vectorised kernel across the rows
        weights = weights.transpose(-1, -2).softmax(-2).transpose(-1, -2)
    return _deformable_sample_torch(value, reference, offsets, weights, size)


def _deformable_sample_torch(
    value: Tensor, reference: Tensor, offsets: Tensor, weights: Tensor, size: tuple[int, int]
) -> Tensor:
    """`deformable_sample` in PyTorch operations (autograd, any device and dtype)."""
    batch, num, heads, head_dim = value.shape
    queries, points = weights.shape[1], weights.shape[-1]
    height, width = size
    x = _source_pixel(reference[:, 0], offsets[..., 0], width)  # (B, Q, heads, points)
    y = _source_pixel(reference[:, 1], offsets[..., 1], height)
    x_low, x_high, wx_low, wx_high = _neighbours(x, width)
    y_low, y_high, wy_low, wy_high = _neighbours(y, height)
    wy_low, wy_high = wy_low * weights, wy_high * weights
    # grid_sample's corner order: north-west, north-east, south-west, south-east
    corner_weights = torch.stack([wy_low * wx_low, wy_low * wx_high, wy_high * wx_low, wy_high * wx_high], -1)

    # the value row of pixel (b, y, x) for head h is ((b·H + y)·W + x)·heads + h; int32 unless that overflows
    index_dtype = torch.int32 if batch * num * heads < 2**31 else torch.int64
    arange = functools.partial(torch.arange, dtype=index_dtype, device=value.device)
    first = arange(batch)[:, None, None, None] * (num * heads) + arange(heads)[:, None]  # (B, 1, heads, 1)
    col_low, col_high = (c.to(index_dtype) * heads for c in (x_low, x_high))
    row_low, row_high = (r.to(index_dtype) * (width * heads) + first for r in (y_low, y_high))
    rows = torch.stack([row_low + col_low, row_low + col_high, row_high + col_low, row_high + col_high], -1)

    # under autocast grid_sample runs in float32; so does this sum
    dtype = torch.promote_types(value.dtype, corner_weights.dtype)
    out = F.embedding_bag(
        rows.view(-1, 4 * points),
        value.reshape(-1, head_dim).to(dtype),
        per_sample_weights=corner_weights.view(-1, 4 * points).to(dtype),
        mode="sum",
    )
    return out.view(batch, queries, heads * head_dim)


class DeformableAttention(nn.Module):
    """Single-level deformable attention with `heads` heads of `points` sampling points each."""

    def __init__(self, channels: int, heads: int, points: int) -> None:
        super().__init__()
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(channels, heads * points * 2)
        self.attention_weights = nn.Linear(channels, heads * points)
        self.value_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's init: head h's point k starts k + 1 pixels out along direction 2πh/heads, uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        direction = torch.stack([theta.cos(), theta.sin()], dim=-1)
        direction = direction / direction.abs().max(dim=-1, keepdim=True).values  # onto the unit square
        distance = torch.arange(1, self.points + 1, dtype=torch.float32)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((direction[:, None, :] * distance[None, :, None]).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: Tensor, value: Tensor, reference: Tensor, size: tuple[int, int]) -> Tensor:
        """Attend from each query to its map.

        query: (B, N, C) with positional encoding added; value: (B, N, C), the map flattened row-major with
        N = height·width; reference: (N, 2) normalised (x, y); size: (height, width). Returns (B, N, C),
        without residual.
        """
        batch, num, channels = value.shape
        heads, points = self.heads, self.points
        values = self.value_proj(value).view(batch, num, heads, channels // heads)
        offsets = self.sampling_offsets(query).view(batch, -1, heads, points, 2)
        logits = self.attention_weights(query).view(batch, -1, heads, points)
        return self.output_proj(_sample(values, reference, offsets, logits, size, softmax=True))
