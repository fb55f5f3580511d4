"""The `cuda` backend: mamba-ssm's fused kernel when it imports, else the PyTorch path on the GPU.

mamba-ssm is optional (`pip install mdseg[cuda]`, needs a wheel matching torch/CUDA or a CUDA toolchain);
it is imported only here, only when CUDA tensors are scanned.
"""

from __future__ import annotations

from torch import Tensor

from mdseg.kernels.backends import mamba_ssm_problem
from mdseg.kernels.scan_torch import selective_scan_torch


def selective_scan_cuda(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as `selective_scan_reference`."""
    if u.is_cuda and mamba_ssm_problem() is None:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        result = selective_scan_fn(
            u.contiguous(),
            delta.contiguous(),
            A.float().contiguous(),
            B.contiguous(),
            C.contiguous(),
            None if D is None else D.float(),
            None if z is None else z.contiguous(),
            None if delta_bias is None else delta_bias.float(),
            delta_softplus,
            return_last_state,
        )
        if return_last_state:
            out, last = result
            return out, last.float()
        return result
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
