"""The specification of the selective scan: plain sequential PyTorch with autograd.

Every fast path in `mdseg.kernels` must match `selective_scan_reference`; tests compare them.
Semantics follow mamba-ssm's `selective_scan_fn` for real A:

    dt_l   = softplus(delta_l + delta_bias)      (softplus only when delta_softplus)
    x_l    = exp(dt_l * A) * x_{l-1} + dt_l * B_l * u_l        x_{-1} = 0, state (n,) per channel
    y_l    = <C_l, x_l> + D * u_l
    out_l  = y_l * silu(z_l)                     (only when z is given)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def expand_groups(bc: Tensor, channels: int) -> Tensor:
    """Return B or C as (b, d, n, l) float32: (b, n, l) is shared by all d channels, (b, g, n, l) by d/g each."""
    bc = bc.float()
    if bc.dim() == 3:
        return bc.unsqueeze(1).expand(-1, channels, -1, -1)
    groups = bc.shape[1]
    return bc.repeat_interleave(channels // groups, dim=1)


def selective_scan_reference(
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
    """Sequential selective scan. Shapes: u, delta, z (b, d, l); A (d, n); B, C (b, n, l) or (b, g, n, l);
    D, delta_bias (d,). Accumulates in float32 and returns `u`'s dtype (last state (b, d, n) float32)."""
    dtype_in = u.dtype
    channels = u.shape[1]
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    A = A.float()
    Bx = expand_groups(B, channels)
    Cx = expand_groups(C, channels)
    delta_a = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (b, d, l, n)
    delta_b_u = (delta * u).unsqueeze(-1) * Bx.transpose(2, 3)  # (b, d, l, n)
    x = u.new_zeros(u.shape[0], channels, A.shape[1])
    ys = []
    # unbind once: indexing step i inside the loop would make autograd build a full-size gradient per step
    for decay, inp, c in zip(delta_a.unbind(2), delta_b_u.unbind(2), Cx.unbind(3), strict=True):
        x = decay * x + inp
        ys.append((x * c).sum(-1))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out
