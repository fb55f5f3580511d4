"""VMamba-v2 encoder parts: stem, downsample, the SS2D scan core, the VSS block and DropPath.

Streams are carried channels-last, (B, H, W, C), between blocks: every LayerNorm and Linear acts on the last
axis, and only the 3×3 convolutions switch to (B, C, H, W) and back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdseg.kernels import ss2d_scan, to_scan_order

DIRECTIONS = 4  # cross-scan orders: row-major, column-major, and their reverses


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's residual branch with probability `p`, rescale the rest."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class Stem(nn.Module):
    """(B, bands, H, W) -> (B, H/4, W/4, dim): conv3×3 s2 -> LN -> GELU -> conv3×3 s2 -> LN."""

    def __init__(self, bands: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(bands, dim // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = nn.LayerNorm(dim // 2)
        self.conv2 = nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(self.conv1(x).permute(0, 2, 3, 1))
        x = F.gelu(x).permute(0, 3, 1, 2)
        return self.norm2(self.conv2(x).permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """(B, H, W, dim_in) -> (B, H/2, W/2, dim_out): conv3×3 s2 -> LN."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 1, 2)
        if self.conv.weight.is_contiguous() and self.conv.weight.numel() > x.numel():
            # a channels-last input makes the convolution reorder its NCHW weight on every call; in the later
            # stages the weight is the larger tensor (36× the input in `paper`'s last), so copy the input
            x = x.contiguous()
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear on the last axis."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def depthwise_conv3x3(channels: int) -> nn.Conv2d:
    """The SS2D local mixer: depthwise 3×3, no bias."""
    return nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels, bias=False)


def conv_silu(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """(B, H, W, C) -> SiLU(conv(x)) as a (B, C, H, W) map in channels-last memory, as the convolution of the
    channels-last view returns it: the SS2D projections and the CPU scan kernel read that layout in place."""
    return F.silu(conv(x.permute(0, 3, 1, 2)))


def channels_to_last(y: Tensor, height: int, width: int) -> Tensor:
    """(B, C, H·W) -> contiguous (B, H, W, C): a view when y is the transpose of a contiguous (B, H·W, C) (the
    CPU scan's output for a channels-last map), else a copy one map at a time: a single map's transpose is a
    2-D one, which PyTorch copies in cache-sized blocks; the batched transpose (LayerNorm's own copy of a
    transposed view) is an element-by-element strided copy, up to twice as slow on the first stages' maps."""
    batch, channels, _ = y.shape
    if y.transpose(1, 2).is_contiguous():
        return y.transpose(1, 2).view(batch, height, width, channels)
    out = y.new_empty(batch, height * width, channels)
    for i in range(batch):
        out[i].copy_(y[i].t())
    return out.view(batch, height, width, channels)


def per_pixel(weight: Tensor, maps: Tensor) -> Tensor:
    """Projections (k, c, d) applied at every pixel of maps (B, d, H, W) -> contiguous (B, k·c, H·W).

    One bmm over the maps as they lie (a channels-last map as the transposed operand): einsum copies a batch
    of maps into (B, H·W, d) first, and matmul copies its result out of the transposed product it computes."""
    batch, channels = maps.shape[:2]
    if maps.is_contiguous():
        pixels = maps.flatten(2)
    else:  # channels-last: (B, H·W, d) is a view, its transpose the (B, d, H·W) operand
        pixels = maps.permute(0, 2, 3, 1).reshape(batch, -1, channels).transpose(1, 2)
    return torch.bmm(weight.flatten(0, 1).expand(batch, -1, -1), pixels)


class ScanCore(nn.Module):
    """The selective-scan heart of SS2D, shared by the encoder and both fusion modules.

    Per direction k: (Δ_rank, B, C) = x_proj[k] · drive_k, Δ = dt_proj[k] · Δ_rank (+ bias, softplus in the
    scan), A = −exp(A_log), skip D; the scanned input is u_k. The four outputs are cross-merged and
    layer-normed. Plain SS2D drives the scan with its own input (drive = u); DCF drives the reversed
    directions with the other modality's sequences.
    """

    def __init__(self, d_inner: int, dt_rank: int, d_state: int) -> None:
        super().__init__()
        self.dt_rank = dt_rank
        self.d_state = d_state
        k = DIRECTIONS
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner))
        self.dt_proj_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank))
        self.dt_proj_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_log = nn.Parameter(torch.empty(k * d_inner, d_state))
        self.D = nn.Parameter(torch.empty(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)

    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """Mamba's init: Linear-default x_proj, uniform dt_proj weight, dt log-uniform in [dt_min, dt_max]
        stored as its inverse softplus, S4D-real A (A_log = log 1..n), D = 1."""
        d_inner = self.D.shape[0] // DIRECTIONS
        with torch.no_grad():
            bound = d_inner**-0.5
            self.x_proj_weight.uniform_(-bound, bound)
            bound = self.dt_rank**-0.5
            self.dt_proj_weight.uniform_(-bound, bound)
            log_dt = torch.empty_like(self.dt_proj_bias).uniform_(math.log(dt_min), math.log(dt_max))
            dt = log_dt.exp().clamp(min=dt_floor)
            self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            n = torch.arange(1, self.d_state + 1, dtype=self.A_log.dtype, device=self.A_log.device)
            self.A_log.copy_(n.log().expand_as(self.A_log))
            self.D.fill_(1.0)

    def forward(self, u: Tensor, drive_forward: Tensor, drive_reverse: Tensor) -> Tensor:
        """Maps u, drive_forward, drive_reverse (B, d_inner, H, W) -> (B, H, W, d_inner).

        u is scanned in all four directions; Δ, B, C of directions 0–1 come from drive_forward, of the
        reversed directions 2–3 from drive_reverse (both u in plain SS2D). The projections run on the maps,
        per pixel, and only their small outputs are reordered into each direction's scan order.
        """
        b, d, h, w = u.shape
        if drive_forward is drive_reverse:
            x_dbl = per_pixel(self.x_proj_weight, drive_forward)
        else:
            forward, reverse = self.x_proj_weight[:2], self.x_proj_weight[2:]
            x_dbl = torch.cat([per_pixel(forward, drive_forward), per_pixel(reverse, drive_reverse)], dim=1)
        x_dbl = to_scan_order(x_dbl.view(b, DIRECTIONS, -1, h, w))
        dt_low, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        y = ss2d_scan(
            u,
            dt_low,
            -torch.exp(self.A_log.float()),
            B.contiguous(),
            C.contiguous(),
            D=self.D.float(),
            delta_bias=self.dt_proj_bias.reshape(-1).float(),
            delta_softplus=True,
            delta_proj=self.dt_proj_weight,
        )
        return self.out_norm(channels_to_last(y, h, w))


class SS2D(nn.Module):
    """SS2D, VMamba's "v05_noz": Linear d->d_inner, dwconv3×3, SiLU, 4-way selective scan, LN, Linear d_inner->d.
    No z-gate. (B, H, W, d) -> (B, H, W, d)."""

    def __init__(self, dim: int, d_inner: int, dt_rank: int, d_state: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, d_inner, bias=False)
        self.conv = depthwise_conv3x3(d_inner)
        self.core = ScanCore(d_inner, dt_rank, d_state)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = conv_silu(self.in_proj(x), self.conv)
        return self.out_proj(self.core(x, x, x))


class VSSBlock(nn.Module):
    """Pre-norm residual block: x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x))). (B, H, W, d)."""

    def __init__(self, dim: int, d_inner: int, dt_rank: int, d_state: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, d_inner, dt_rank, d_state)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.ss2d(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """Fresh-model init as the release: Linear trunc-normal(0.02) with zero bias, LayerNorm (1, 0), convs at
    PyTorch's default, scan parameters by `ScanCore.reset_parameters`."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ScanCore):
            m.reset_parameters()
