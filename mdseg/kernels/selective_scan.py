"""`selective_scan`: one signature, several implementations (see `mdseg.kernels.backends`)."""

from __future__ import annotations

from torch import Tensor

from mdseg.kernels.backends import resolve_backend, scan_entry_point
from mdseg.kernels.reference import selective_scan_reference
from mdseg.kernels.scan_torch import selective_scan_torch


def _implementation(name: str):
    if name == "reference":
        return selective_scan_reference
    if name == "torch":
        return selective_scan_torch
    if name == "cpu":
        from mdseg.kernels.scan_cpu import selective_scan_cpu

        return selective_scan_cpu
    if name == "triton":
        from mdseg.kernels.scan_triton import selective_scan_triton

        return selective_scan_triton
    from mdseg.kernels.scan_cuda import selective_scan_cuda

    return selective_scan_cuda


@scan_entry_point
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba-ssm's `selective_scan_fn` semantics (real A).

    Shapes: u, delta, z (b, d, l); A (d, n); B, C (b, n, l) or grouped (b, g, n, l) with d divisible by g;
    D, delta_bias (d,). Returns out (b, d, l) in u's dtype (half inputs accumulate in float32), and with
    `return_last_state` also the final state (b, d, n) in float32 (differentiable only on the `reference` and
    `torch` backends; the fused kernels (`cpu`, `triton`, `cuda`) treat it as an output without gradient, as
    mamba-ssm does).
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    impl = _implementation(resolve_backend(backend, u.device, u.dtype))
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (b, d, l), got {tuple(u.shape)}")
    b, d, length = u.shape
    n = A.shape[-1]
    if delta.shape != u.shape or (z is not None and z.shape != u.shape):
        raise ValueError("delta and z must have u's shape (b, d, l)")
    if A.shape != (d, n):
        raise ValueError(f"A must be (d, n) = ({d}, n), got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            ok = t.shape == (b, n, length)
        else:
            ok = t.dim() == 4 and t.shape[0] == b and t.shape[2:] == (n, length) and d % t.shape[1] == 0
        if not ok:
            raise ValueError(f"{name} must be (b, n, l) or (b, g, n, l) with d % g == 0, got {tuple(t.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f"{name} must be (d,) = ({d},), got {tuple(t.shape)}")
