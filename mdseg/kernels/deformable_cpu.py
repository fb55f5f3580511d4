"""The head's deformable sampling as one numba pass on CPU, for inference (no gradient).

`mdseg.models.deformable_attention.deformable_sample` runs this when nothing needs a gradient: per (query, head)
it reads the 4 neighbouring value rows of each point and adds them, weighted, straight into the output row, in
one parallel loop over the queries. The PyTorch formulation it replaces builds the pixel coordinates, bilinear
weights and row indices as some thirty element-wise tensors of shape (B, Q, heads, points) before its gather:
at the `tiny` head's 64² maps that bookkeeping cost 5× the gather itself.

The coordinates follow the reference's float operations one by one (no fast math here, so no contraction or
reordering), so every point floors to the pixel grid_sample picks, exact borders included; only the order in
which a point's weighted rows are added can differ from the reference's, by rounding.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from mdseg.kernels.scan_cpu import _set_threads

# queries per parallel work unit: few enough units to keep the scheduling cheap, enough for every core
_CHUNK = 64


@njit(inline="always")
def _axis(reference, offset, size, half, c):
    """Pixel coordinate along one axis, in `_source_pixel`'s operations: 2·(r + o/size) − 1, then (g + 1)·size/2
    − 0.5; its low neighbour (clamped to [−2, size] so it fits an int) and the fraction t. c: the constants
    (1, 2, 0.5, −2) in the data's dtype, so float32 data is computed in float32."""
    grid = c[1] * (reference + offset / size) - c[0]
    coordinate = (grid + c[0]) * half - c[2]
    low = np.floor(coordinate)
    t = coordinate - low
    low = min(max(low, c[3]), size)
    return np.int64(low), t


@njit(parallel=True, cache=True, error_model="numpy")
def _sample(value, reference, offsets, weights, softmax, height, width, out):  # noqa: C901
    """value (B·N·heads, D) rows, reference (Q, 2) (x, y), offsets (B, Q, heads, points, 2), weights
    (B, Q, heads, points), each (query, head)'s point weights, or with `softmax` their logits, softmaxed
    here → out (B·Q·heads, D), overwritten."""
    batch, queries, _, points = weights.shape
    total_jobs = batch * queries
    for chunk in prange((total_jobs + _CHUNK - 1) // _CHUNK):
        attention = np.empty(points, weights.dtype)  # one scratch row per chunk of queries, not per query
        for job in range(chunk * _CHUNK, min(total_jobs, (chunk + 1) * _CHUNK)):
            _sample_query(value, reference, offsets, weights, softmax, height, width, out, job, attention)


@njit(inline="always", error_model="numpy")
def _sample_query(value, reference, offsets, weights, softmax, height, width, out, job, attention):  # noqa: C901
    """One (batch item, query) `job` of `_sample`, all its heads; `attention`: a scratch row of `points`."""
    _, queries, heads, points = weights.shape
    depth = value.shape[1]
    num = height * width
    dtype = reference.dtype.type
    one, zero = dtype(1.0), dtype(0.0)
    constants = (one, dtype(2.0), dtype(0.5), dtype(-2.0))
    fwidth, fheight = dtype(width), dtype(height)
    half_w, half_h = dtype(width / 2), dtype(height / 2)
    b = job // queries
    q = job - b * queries
    rx, ry = reference[q, 0], reference[q, 1]
    for h in range(heads):
        target = job * heads + h
        for c in range(depth):
            out[target, c] = zero
        for p in range(points):
            attention[p] = weights[b, q, h, p]
        if softmax:  # as torch.softmax: exp(w − max) / Σ
            top = attention[0]
            for p in range(1, points):
                top = max(top, attention[p])
            total = zero
            for p in range(points):
                attention[p] = np.exp(attention[p] - top)
                total += attention[p]
            for p in range(points):
                attention[p] = attention[p] / total
        for p in range(points):
            ox, oy = offsets[b, q, h, p, 0], offsets[b, q, h, p, 1]
            if not (np.isfinite(ox) and np.isfinite(oy)):
                continue
            x_low, tx = _axis(rx, ox, fwidth, half_w, constants)
            y_low, ty = _axis(ry, oy, fheight, half_h, constants)
            # bilinear weights as the reference: (1 − t, t) per axis, the y one times the point's weight
            for dy in range(2):
                y = y_low + dy
                if y < 0 or y >= height:
                    continue
                wy = (one - ty if dy == 0 else ty) * attention[p]
                for dx in range(2):
                    x = x_low + dx
                    if x < 0 or x >= width:
                        continue
                    w = wy * (one - tx if dx == 0 else tx)
                    source = ((b * num + y * width + x) * heads) + h
                    for c in range(depth):
                        out[target, c] += w * value[source, c]


def deformable_sample_cpu(
    value: Tensor, reference: Tensor, offsets: Tensor, weights: Tensor, size: tuple[int, int], softmax: bool = False
) -> Tensor:
    """`deformable_sample` for CPU tensors of one float dtype (float32 or float64), without autograd:
    (B, N, heads, head_dim) values → (B, Q, heads·head_dim). With `softmax`, weights are the points' logits
    and each (query, head)'s are softmaxed here, as `DeformableAttention` would before sampling."""
    batch, _, heads, head_dim = value.shape
    queries = weights.shape[1]
    out = torch.empty(batch * queries * heads, head_dim, dtype=value.dtype)
    rows = value.detach().reshape(-1, head_dim).contiguous()
    arrays = (t.detach().contiguous().numpy() for t in (rows, reference, offsets, weights))
    _set_threads()
    with torch.profiler.record_function("deformable_sample_cpu"):
        _sample(*arrays, softmax, size[0], size[1], out.numpy())
    return out.view(batch, queries, heads * head_dim)


__all__ = ["deformable_sample_cpu"]
