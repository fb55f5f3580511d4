"""A vectorised selective scan in plain PyTorch that runs on any device (GPU without mamba-ssm, meta).

The sequence is cut into chunks; inside a chunk the linear recurrence x_l = a_l·x_{l-1} + b_l is solved
with a log-depth (Hillis–Steele) scan over (a, b) pairs, which only multiplies decays (never divides),
so it stays finite for strong and near-zero decay alike. The carried state links the chunks.
Autograd provides the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mdseg.kernels.reference import expand_groups

CHUNK = 256


def _scan_pairs(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Inclusive scan of x_t = a_t x_{t-1} + b_t along dim 2 from x = 0: returns (prod a, x)."""
    length = a.shape[2]
    step = 1
    while step < length:
        b = torch.cat([b[:, :, :step], b[:, :, step:] + a[:, :, step:] * b[:, :, :-step]], dim=2)
        a = torch.cat([a[:, :, :step], a[:, :, step:] * a[:, :, :-step]], dim=2)
        step *= 2
    return a, b


def selective_scan_torch(
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
    dtype_in = u.dtype
    channels = u.shape[1]
    u32 = u.float()
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A = A.float()
    Bx = expand_groups(B, channels)
    Cx = expand_groups(C, channels)
    state = u32.new_zeros(u.shape[0], channels, A.shape[1])
    ys = []
    for start in range(0, u.shape[2], CHUNK):
        sl = slice(start, start + CHUNK)
        a = torch.exp(dt[:, :, sl, None] * A[:, None, :])  # (b, d, t, n)
        bu = (dt[:, :, sl] * u32[:, :, sl]).unsqueeze(-1) * Bx[:, :, :, sl].transpose(2, 3)
        decay, x = _scan_pairs(a, bu)
        x = x + decay * state[:, :, None, :]
        ys.append(torch.einsum("bdtn,bdnt->bdt", x, Cx[:, :, :, sl]))
        state = x[:, :, -1]
    y = torch.cat(ys, dim=2)
    out = y if D is None else y + u32 * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, state) if return_last_state else out
