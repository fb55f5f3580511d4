"""The SS2D four-direction scan: cross-scan a map, selective-scan each direction, cross-merge.

The `cpu` and `triton` backends fuse the three (the scan orders are index arithmetic inside the kernels), every
other backend composes `cross_scan`, `selective_scan` and `cross_merge`. All give the same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mdseg.kernels.backends import resolve_backend, scan_entry_point
from mdseg.kernels.cross_scan import cross_merge, cross_scan
from mdseg.kernels.selective_scan import selective_scan


@scan_entry_point
def ss2d_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    backend: str = "auto",
    delta_proj: Tensor | None = None,
) -> Tensor:
    """Scan map u (b, d, h, w) in the four SS2D orders and merge: returns (b, d, h·w) in map order.

    delta (b, 4, d, h·w) and B, C (b, 4, n, h·w) are given in each direction's scan order (as
    `cross_scan` / `to_scan_order` produce them); A (4·d, n); D, delta_bias (4·d,). Direction k uses rows
    k·d … (k+1)·d − 1 of A, D and delta_bias.

    With `delta_proj` (4, d, r), delta is its low-rank factor (b, 4, r, h·w) and Δ = delta_proj @ delta per
    direction (SS2D's dt_proj). The `cpu` backend computes that product inside the scan when no gradient is
    needed (Δ is then never materialised); everywhere else it is a matmul before the scan.
    """
    b, d, h, w = u.shape
    length = h * w
    n = A.shape[-1]
    if delta_proj is not None:
        r = delta_proj.shape[-1]
        if delta_proj.shape != (4, d, r) or delta.shape != (b, 4, r, length):
            raise ValueError(
                f"delta_proj must be (4, d, r) = (4, {d}, r) and delta (b, 4, r, h·w) = {(b, 4, r, length)}; "
                f"got delta_proj {tuple(delta_proj.shape)}, delta {tuple(delta.shape)}"
            )
    elif delta.shape != (b, 4, d, length):
        raise ValueError(f"delta must be (b, 4, d, h·w) = {(b, 4, d, length)}, got {tuple(delta.shape)}")
    if A.shape != (4 * d, n) or B.shape != (b, 4, n, length) or C.shape != B.shape:
        raise ValueError(
            f"A must be (4·d, n) = {(4 * d, n)} and B, C (b, 4, n, h·w) = {(b, 4, n, length)}; got A "
            f"{tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (4 * d,):
            raise ValueError(f"{name} must be (4·d,) = ({4 * d},), got {tuple(t.shape)}")
    name = resolve_backend(backend, u.device, u.dtype)
    if delta_proj is not None:
        grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (u, delta, delta_proj, A, B, C, D, delta_bias)
        )
        if name == "cpu" and not grad:
            from mdseg.kernels.scan_cpu import ss2d_scan_lowrank_cpu

            return ss2d_scan_lowrank_cpu(u, delta, delta_proj, A, B, C, D, delta_bias, delta_softplus)
        # a broadcast matmul writes (b, 4, d, l) contiguous; einsum returned a permuted view the scan copied
        delta = torch.matmul(delta_proj, delta)
    if name == "cpu":
        from mdseg.kernels.scan_cpu import ss2d_scan_cpu

        return ss2d_scan_cpu(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "triton":
        from mdseg.kernels.scan_triton import ss2d_scan_triton

        return ss2d_scan_triton(u, delta, A, B, C, D, delta_bias, delta_softplus)
    y = selective_scan(
        cross_scan(u).reshape(b, 4 * d, length),
        delta.reshape(b, 4 * d, length),
        A, B, C, D, None, delta_bias, delta_softplus, backend=name,
    )  # fmt: skip
    return cross_merge(y.view(b, 4, d, length), h, w)
