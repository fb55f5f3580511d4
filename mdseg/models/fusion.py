"""The two optical–SAR fusion mixers (DCF, DS-S4) and the residual block that holds one mixer per stream.

Every mixer takes `(own, other)`, both layer-normed (B, H, W, d), and returns the update for `own` only.
A fusion block owns two independent mixers: one updates the optical stream, one the SAR stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdseg.models.encoder import DropPath, Mlp, ScanCore, conv_silu, depthwise_conv3x3


class DCF(nn.Module):
    """Double cross-fusion: scan the own sequences, but let the other modality drive the reversed directions.

    Both inputs get Linear d->d_inner, dwconv3×3 and SiLU and are cross-scanned. Δ, B, C for directions 0–1
    (row- and column-major) come from the own sequences, for directions 2–3 (their reverses) from the other
    modality's; the scanned input u is always the own sequence. Cross-merge -> LN -> Linear d_inner->d.
    The release also scans the other input with the swapped roles and projects it, then discards that
    output; we skip that dead branch.
    """

    def __init__(self, dim: int, d_inner: int, dt_rank: int, d_state: int) -> None:
        super().__init__()
        self.in_proj_own = nn.Linear(dim, d_inner, bias=False)
        self.in_proj_other = nn.Linear(dim, d_inner, bias=False)
        self.conv_own = depthwise_conv3x3(d_inner)
        self.conv_other = depthwise_conv3x3(d_inner)
        self.core = ScanCore(d_inner, dt_rank, d_state)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, own: Tensor, other: Tensor) -> Tensor:
        """own, other (B, H, W, d) -> update for own (B, H, W, d)."""
        own_map = conv_silu(self.in_proj_own(own), self.conv_own)
        other_map = conv_silu(self.in_proj_other(other), self.conv_other)
        return self.out_proj(self.core(own_map, own_map, other_map))


class DSS4(nn.Module):
    """Dual-splitting S4: scan own and other with one SS2D core, gate both by the own stream's z.

    Linear d->2·d_inner gives own (x, z); the other stream gets only its x half (the release computes the
    other's z and discards it). Each x passes its own dwconv3×3 + SiLU; the shared core (x_proj, dt_proj,
    A, D, out-LN) scans both; output = Linear(SS2D(x_own)·SiLU(z_own) + SS2D(x_other)·SiLU(z_own)).
    """

    def __init__(self, dim: int, d_inner: int, dt_rank: int, d_state: int) -> None:
        super().__init__()
        self.in_proj_own = nn.Linear(dim, 2 * d_inner, bias=False)
        self.in_proj_other = nn.Linear(dim, d_inner, bias=False)
        self.conv_own = depthwise_conv3x3(d_inner)
        self.conv_other = depthwise_conv3x3(d_inner)
        self.core = ScanCore(d_inner, dt_rank, d_state)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, own: Tensor, other: Tensor) -> Tensor:
        """own, other (B, H, W, d) -> update for own (B, H, W, d)."""
        b = own.shape[0]
        x_own, z_own = self.in_proj_own(own).chunk(2, dim=-1)
        own_map = conv_silu(x_own, self.conv_own)
        other_map = conv_silu(self.in_proj_other(other), self.conv_other)
        # one scan call for both: the core's parameters are shared, so stack them along the batch
        maps = torch.cat([own_map, other_map])
        y = self.core(maps, maps, maps)
        return self.out_proj((y[:b] + y[b:]) * F.silu(z_own))


class FusionBlock(nn.Module):
    """Pre-norm residual fusion of the two streams with one `mixer` (DCF or DS-S4) per stream.

    a += DropPath(mix_opt(LN(a), LN(b))), b += DropPath(mix_sar(LN(b), LN(a))), then each stream its own
    LN -> MLP -> residual. Streams (B, H, W, d); a is optical, b is SAR.
    """

    def __init__(
        self,
        mixer: type[DCF] | type[DSS4],
        dim: int,
        d_inner: int,
        dt_rank: int,
        d_state: int,
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.norm1_opt = nn.LayerNorm(dim)
        self.norm1_sar = nn.LayerNorm(dim)
        self.mix_opt = mixer(dim, d_inner, dt_rank, d_state)
        self.mix_sar = mixer(dim, d_inner, dt_rank, d_state)
        self.norm2_opt = nn.LayerNorm(dim)
        self.norm2_sar = nn.LayerNorm(dim)
        self.mlp_opt = Mlp(dim, int(dim * mlp_ratio))
        self.mlp_sar = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        na, nb = self.norm1_opt(a), self.norm1_sar(b)
        a = a + self.drop_path(self.mix_opt(na, nb))
        b = b + self.drop_path(self.mix_sar(nb, na))
        a = a + self.drop_path(self.mlp_opt(self.norm2_opt(a)))
        b = b + self.drop_path(self.mlp_sar(self.norm2_sar(b)))
        return a, b
