"""The `triton` backend: selective scan and the fused SS2D scan as Triton kernels, forward and backward.

Imported only when the backend runs (never by `import mdseg`). On CUDA tensors the kernels are compiled; CPU
tensors run only under Triton's interpreter (TRITON_INTERPRET=1 set before triton is first imported: that is
when Triton builds its @jit functions, compiled or interpreted), which is how CI checks them without a GPU.

Forward: one program per (batch, block of channels of one group) walks the sequence in chunks of CHUNK steps.
Inside a chunk the recurrence x_t = a_t·x_{t-1} + b_t, with a_t = exp(Δ_t·A) and b_t = Δ_t·B_t·u_t, is an
associative scan over (a, b) pairs on a (channels, state, time) tile; the state carried from the previous
chunk enters as x_t += (Π a)·x_carry. State and accumulation are float32 (float64 for float64 inputs),
whatever the input dtype. The state at every chunk start is saved for the backward.

Backward: the chunks in reverse. A chunk's forward states are recomputed from its saved start state (x_{t-1}
by a scan over the pairs shifted one step, x_t = a_t·x_{t-1} + b_t), then the reverse-time recurrence
h_t = a_{t+1}·h_{t+1} + ∂L/∂y_t·C_t is a reverse associative scan carrying h from the next chunk, as in
`scan_cpu`. Gradients of B and C (shared by the channels of a group) are summed per program into a private
buffer and the blocks are summed afterwards, and dA, dD and d(delta_bias) per batch row likewise: no atomics,
so results do not depend on scheduling.

SS2D: the same kernels with the four scan directions of an (h, w) map as four groups. A direction's step t is
turned into a map position inside the loads (`_map_offset`), so u and ∂L/∂out are read straight from the map
and one program runs the four directions of its channels in turn, adding each into the merged output (and du)
in place. The four scan-order copies of the map are never written.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor


@dataclass(frozen=True)
class _Config:
    """Tile sizes: CHUNK time steps per chunk (the backward restarts from the forward's chunk-start states, so
    both use the same), channels per program forward and backward (the backward keeps about three times as
    many tiles live, so it takes half the channels), the state dimension padded to a power of 2, warps."""

    chunk: int
    block_d_fwd: int
    block_d_bwd: int
    block_n: int
    warps: int = 4


def _config(nstate: int, per_group: int, on_gpu: bool) -> _Config:
    """Tile sizes. On a GPU the parallelism is across programs (batch × channel blocks) and, inside a chunk,
    across time: d_state 1 (the model's) takes 128-step chunks of 4 channels forward, 2 backward (a 256² tile's
    first stage alone makes 64 programs per tile); larger d_state 32-step chunks and (channels, state, time)
    tiles of 1024 elements forward, half backward, on 8 warps. Chosen so that ptxas (sm_80, sm_90) reports
    (almost) no register spills for either kernel; their speed is not measured yet. Under the interpreter (CPU tensors)
    small tiles: it costs per operation and per scan step, and CI's short sequences then still cross chunk and
    channel-block boundaries."""
    block_n = triton.next_power_of_2(nstate)
    if not on_gpu:
        chunk, block_d, warps = 32, 4, 4
    elif block_n == 1:
        chunk, block_d, warps = 128, 4, 4
    else:
        chunk, warps = 32, 8
        block_d = max(1, 1024 // (block_n * chunk))
    block_d = min(block_d, triton.next_power_of_2(per_group))
    return _Config(chunk, block_d, max(1, block_d // 2), block_n, warps)


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    """Compose two steps of x -> a·x + b: first (a_left, b_left), then (a_right, b_right)."""
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _map_offset(t, k: tl.constexpr, H, W, L, stride_h, stride_w):
    """Memory offset in an (H, W) map of step t of scan direction k (0 row-major, 1 column-major, 2 and 3
    their reverses). A plain 1-D scan is direction 0 of a (1, L) map."""
    if k >= 2:
        t = L - 1 - t
    if k % 2 == 1:
        i = t % H
        j = t // H
    else:
        i = t // W
        j = t % W
    return i * stride_h + j * stride_w


@triton.jit
def _softplus(v):
    """log(1 + exp(v)) as torch's softplus (linear above 20); log1p by Kahan's trick, accurate for tiny exp."""
    e = tl.exp(tl.minimum(v, 20.0))
    one_plus = 1.0 + e
    log1p = tl.where(one_plus == 1.0, e, tl.log(one_plus) * (e / (one_plus - 1.0)))
    return tl.where(v > 20.0, v, log1p)


@triton.jit
def _time_steps(delta_ptr, offs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """(dt, delta + bias) for a (channels, time) tile; dt = softplus(delta + bias) when SOFTPLUS."""
    v = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        v += bias[:, None]
    if SOFTPLUS:
        return _softplus(v), v
    return v, v


@triton.jit
def _channel_params(A_ptr, D_ptr, bias_ptr, c, s, mask_d, mask_n, sA_c, sA_n, sD, sbias,
                    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """A (channels, state), D and delta_bias (channels,) of channels c, zero where absent or masked."""
    A = tl.load(A_ptr + c[:, None] * sA_c + s[None, :] * sA_n, mask=mask_d[:, None] & mask_n[None, :], other=0.0)
    Dv = tl.zeros((BLOCK_D,), dtype=ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + c * sD, mask=mask_d, other=0.0).to(ACC)
    bias = tl.zeros((BLOCK_D,), dtype=ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + c * sbias, mask=mask_d, other=0.0).to(ACC)
    return A.to(ACC), Dv, bias


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, states_ptr, last_ptr,
    L, H, W, DCH, CTOT, NSTATE, NCHUNKS,
    su_b, su_g, su_c, su_h, su_w,
    so_b, so_g, so_c, so_h, so_w,
    sd_b, sd_g, sd_c, sd_l,
    sz_b, sz_g, sz_c, sz_l,
    sB_b, sB_g, sB_n, sB_l,
    sC_b, sC_g, sC_n, sC_l,
    sA_c, sA_n, sD, sbias,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    NDIR: tl.constexpr, SAVE_STATES: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """Grid (channel blocks, group programs, batch). Channel j of group g is channel g·DCH + j of A, D, bias,
    states (b, CTOT, NCHUNKS, n; written only with SAVE_STATES, for the backward) and last (b, CTOT, n) (both
    contiguous). u and out are maps seen through (batch, group, channel, row, column) strides; delta, z
    (b, g, DCH, L); B, C (b, g, n, L).
    NDIR = 1: a program scans one group. NDIR = 4 (SS2D): it scans the four directions of its channels in
    turn and adds each output into the one merged map."""
    pid_blk = tl.program_id(0)
    pid_g = tl.program_id(1)
    bi = tl.program_id(2).to(tl.int64)
    j = pid_blk * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = j < DCH
    s = tl.arange(0, BLOCK_N)
    mask_n = s < NSTATE
    mask_dn = mask_d[:, None] & mask_n[None, :]
    tc = tl.arange(0, CHUNK)
    for k in tl.static_range(NDIR):
        if k > 0:
            tl.debug_barrier()  # the previous direction's adds into the merged map are done
        g = pid_g * NDIR + k
        c = g * DCH + j
        A, Dv, bias = _channel_params(
            A_ptr, D_ptr, bias_ptr, c, s, mask_d, mask_n, sA_c, sA_n, sD, sbias, HAS_D, HAS_BIAS, ACC, BLOCK_D
        )
        u_base = u_ptr + bi * su_b + g * su_g + j[:, None] * su_c
        o_base = out_ptr + bi * so_b + g * so_g + j[:, None] * so_c
        d_base = delta_ptr + bi * sd_b + g * sd_g + j[:, None] * sd_c
        z_base = z_ptr + bi * sz_b + g * sz_g + j[:, None] * sz_c
        B_base = B_ptr + bi * sB_b + g * sB_g + s[:, None] * sB_n
        C_base = C_ptr + bi * sC_b + g * sC_g + s[:, None] * sC_n
        row = bi * CTOT + c
        state_ptrs = states_ptr + (row * NCHUNKS)[:, None] * NSTATE + s[None, :]
        x = tl.zeros((BLOCK_D, BLOCK_N), dtype=ACC)
        for ci in range(0, NCHUNKS):
            if SAVE_STATES:
                tl.store(state_ptrs + ci * NSTATE, x, mask=mask_dn)
            t = ci * CHUNK + tc
            mask_t = t < L
            mask = mask_d[:, None] & mask_t[None, :]
            mask_nt = mask_n[:, None] & mask_t[None, :]
            dt, _ = _time_steps(d_base, t[None, :] * sd_l, mask, bias, HAS_BIAS, SOFTPLUS, ACC)
            u = tl.load(u_base + _map_offset(t, k, H, W, L, su_h, su_w)[None, :], mask=mask, other=0.0).to(ACC)
            Bt = tl.load(B_base + t[None, :] * sB_l, mask=mask_nt, other=0.0).to(ACC)
            Ct = tl.load(C_base + t[None, :] * sC_l, mask=mask_nt, other=0.0).to(ACC)
            # steps past L are the identity (a = 1, b = 0), so the chunk's last column is the carried state
            a = tl.where(mask_t[None, None, :], tl.exp(dt[:, None, :] * A[:, :, None]), 1.0)
            b = (dt * u)[:, None, :] * Bt[None, :, :]
            pa, pb = tl.associative_scan((a, b), 2, _combine)
            xs = pb + pa * x[:, :, None]
            x = tl.sum(tl.where(tc[None, None, :] == CHUNK - 1, xs, 0.0), axis=2)
            y = tl.sum(xs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                zv = tl.load(z_base + t[None, :] * sz_l, mask=mask, other=0.0).to(ACC)
                y *= zv * tl.sigmoid(zv)
            o_ptrs = o_base + _map_offset(t, k, H, W, L, so_h, so_w)[None, :]
            if k > 0:
                y += tl.load(o_ptrs, mask=mask, other=0.0).to(ACC)
            tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(last_ptr + row[:, None] * NSTATE + s[None, :], x, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, states_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
    L, H, W, DCH, CTOT, NSTATE, NCHUNKS, NBLK,
    su_b, su_g, su_c, su_h, su_w,
    sg_b, sg_g, sg_c, sg_h, sg_w,
    sdu_b, sdu_g, sdu_c, sdu_h, sdu_w,
    sd_b, sd_g, sd_c, sd_l,
    sz_b, sz_g, sz_c, sz_l,
    sB_b, sB_g, sB_n, sB_l,
    sC_b, sC_g, sC_n, sC_l,
    sA_c, sA_n, sD, sbias,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    NDIR: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """Gradients of `_scan_fwd_kernel` (same grid and layouts; dout and du are maps like out). Writes ddelta,
    dz (b, CTOT, L) and the per-program partials dA (b, CTOT, n), dD, dbias (b, CTOT), dB, dC
    (b, CTOT // DCH, NBLK, n, L), all contiguous; with NDIR = 4, du is summed over the directions in place."""
    pid_blk = tl.program_id(0)
    pid_g = tl.program_id(1)
    bi = tl.program_id(2).to(tl.int64)
    j = pid_blk * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = j < DCH
    s = tl.arange(0, BLOCK_N)
    mask_n = s < NSTATE
    mask_dn = mask_d[:, None] & mask_n[None, :]
    tc = tl.arange(0, CHUNK)
    ngroups = CTOT // DCH
    for k in tl.static_range(NDIR):
        if k > 0:
            tl.debug_barrier()  # the previous direction's adds into du are done
        g = pid_g * NDIR + k
        c = g * DCH + j
        A, Dv, bias = _channel_params(
            A_ptr, D_ptr, bias_ptr, c, s, mask_d, mask_n, sA_c, sA_n, sD, sbias, HAS_D, HAS_BIAS, ACC, BLOCK_D
        )
        u_base = u_ptr + bi * su_b + g * su_g + j[:, None] * su_c
        g_base = dout_ptr + bi * sg_b + g * sg_g + j[:, None] * sg_c
        du_base = du_ptr + bi * sdu_b + g * sdu_g + j[:, None] * sdu_c
        d_base = delta_ptr + bi * sd_b + g * sd_g + j[:, None] * sd_c
        z_base = z_ptr + bi * sz_b + g * sz_g + j[:, None] * sz_c
        B_base = B_ptr + bi * sB_b + g * sB_g + s[:, None] * sB_n
        C_base = C_ptr + bi * sC_b + g * sC_g + s[:, None] * sC_n
        row = bi * CTOT + c
        state_ptrs = states_ptr + (row * NCHUNKS)[:, None] * NSTATE + s[None, :]
        seq_base = (row * L)[:, None]
        part_base = (((bi * ngroups + g) * NBLK + pid_blk) * NSTATE + s[:, None]) * L
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=ACC)
        gA = tl.zeros((BLOCK_D, BLOCK_N), dtype=ACC)
        gD = tl.zeros((BLOCK_D,), dtype=ACC)
        gbias = tl.zeros((BLOCK_D,), dtype=ACC)
        for back in range(0, NCHUNKS):
            ci = NCHUNKS - 1 - back
            t = ci * CHUNK + tc
            mask_t = t < L
            mask = mask_d[:, None] & mask_t[None, :]
            mask_nt = mask_n[:, None] & mask_t[None, :]
            x0 = tl.load(state_ptrs + ci * NSTATE, mask=mask_dn, other=0.0)
            dt, v = _time_steps(d_base, t[None, :] * sd_l, mask, bias, HAS_BIAS, SOFTPLUS, ACC)
            u = tl.load(u_base + _map_offset(t, k, H, W, L, su_h, su_w)[None, :], mask=mask, other=0.0).to(ACC)
            Bt = tl.load(B_base + t[None, :] * sB_l, mask=mask_nt, other=0.0).to(ACC)
            Ct = tl.load(C_base + t[None, :] * sC_l, mask=mask_nt, other=0.0).to(ACC)
            # x_{t-1}: the scan over the pairs of the previous step, the identity at the chunk's first step
            tp = t - 1
            mask_tp = (tc > 0) & (tp < L)
            mask_p = mask_d[:, None] & mask_tp[None, :]
            dt_p, _ = _time_steps(d_base, tp[None, :] * sd_l, mask_p, bias, HAS_BIAS, SOFTPLUS, ACC)
            u_p = tl.load(u_base + _map_offset(tp, k, H, W, L, su_h, su_w)[None, :], mask=mask_p, other=0.0)
            B_p = tl.load(B_base + tp[None, :] * sB_l, mask=mask_n[:, None] & mask_tp[None, :], other=0.0)
            a_p = tl.where(mask_tp[None, None, :], tl.exp(dt_p[:, None, :] * A[:, :, None]), 1.0)
            b_p = (dt_p * u_p.to(ACC))[:, None, :] * B_p.to(ACC)[None, :, :]
            pa, pb = tl.associative_scan((a_p, b_p), 2, _combine)
            x_prev = pb + pa * x0[:, :, None]
            a = tl.exp(dt[:, None, :] * A[:, :, None])
            dtu = dt * u
            x_now = a * x_prev + dtu[:, None, :] * Bt[None, :, :]
            # a_{t+1}, zero from L on: nothing flows back from beyond the sequence
            tn = t + 1
            mask_tn = tn < L
            dt_n, _ = _time_steps(d_base, tn[None, :] * sd_l, mask_d[:, None] & mask_tn[None, :], bias,
                                  HAS_BIAS, SOFTPLUS, ACC)  # fmt: skip
            a_n = tl.where(mask_tn[None, None, :], tl.exp(dt_n[:, None, :] * A[:, :, None]), 0.0)
            g_out = tl.load(g_base + _map_offset(t, k, H, W, L, sg_h, sg_w)[None, :], mask=mask, other=0.0)
            gy = g_out.to(ACC)
            if HAS_Z:
                zv = tl.load(z_base + t[None, :] * sz_l, mask=mask, other=0.0).to(ACC)
                sig = tl.sigmoid(zv)
                y = tl.sum(x_now * Ct[None, :, :], axis=1)
                if HAS_D:
                    y += Dv[:, None] * u
                tl.store(dz_ptr + seq_base + t[None, :], gy * y * sig * (1.0 + zv * (1.0 - sig)), mask=mask)
                gy = gy * zv * sig
            # h_t = dL/dx_t = a_{t+1}·h_{t+1} + gy_t·C_t, carried in from the next chunk
            ha, hb = tl.associative_scan((a_n, gy[:, None, :] * Ct[None, :, :]), 2, _combine, reverse=True)
            hs = hb + ha * h[:, :, None]
            h = tl.sum(tl.where(tc[None, None, :] == 0, hs, 0.0), axis=2)
            ga = hs * a * x_prev
            gA += tl.sum(ga * dt[:, None, :], axis=2)
            gdu = tl.sum(hs * Bt[None, :, :], axis=1)
            gdt = tl.sum(ga * A[:, :, None], axis=1) + gdu * u
            du = gdu * dt
            if HAS_D:
                du += gy * Dv[:, None]
                gD += tl.sum(gy * u, axis=1)
            if SOFTPLUS:
                gdt *= tl.sigmoid(v)
            gbias += tl.sum(gdt, axis=1)
            tl.store(ddelta_ptr + seq_base + t[None, :], gdt, mask=mask)
            du_ptrs = du_base + _map_offset(t, k, H, W, L, sdu_h, sdu_w)[None, :]
            if k > 0:
                du += tl.load(du_ptrs, mask=mask, other=0.0)
            tl.store(du_ptrs, du, mask=mask)
            tl.store(dB_ptr + part_base + t[None, :], tl.sum(hs * dtu[:, None, :], axis=0), mask=mask_nt)
            tl.store(dC_ptr + part_base + t[None, :], tl.sum(gy[:, None, :] * x_now, axis=0), mask=mask_nt)
        tl.store(dA_ptr + row[:, None] * NSTATE + s[None, :], gA, mask=mask_dn)
        tl.store(dD_ptr + row, gD, mask=mask_d)
        tl.store(dbias_ptr + row, gbias, mask=mask_d)


@dataclass(frozen=True)
class _Layout:
    """How a call maps onto the kernels: `groups` groups of `per_group` channels (B/C groups, or the four SS2D
    directions), `ndir` groups per program (4 only for SS2D), sequences of h·w steps ((1, l) for a 1-D scan)."""

    batch: int
    groups: int
    per_group: int
    ndir: int
    h: int
    w: int

    @property
    def length(self) -> int:
        return self.h * self.w

    @property
    def channels(self) -> int:
        return self.groups * self.per_group

    def map_strides(self, t: Tensor) -> tuple[int, ...]:
        """(batch, group, channel, row, column) strides of a map-ordered tensor: u, out, dout, du."""
        if t.dim() == 4:  # the SS2D input map (b, d, h, w)
            return t.stride(0), 0, t.stride(1), t.stride(2), t.stride(3)
        sb, sc, sl = t.stride()
        if self.ndir == 4:  # (b, d, h·w) in map order
            return sb, 0, sc, self.w * sl, sl
        return sb, self.per_group * sc, sc, 0, sl

    def seq_strides(self, t: Tensor | None) -> tuple[int, ...]:
        """(batch, group, channel, step) strides of delta or z: (b, g·DCH, l) or (b, g, DCH, l)."""
        if t is None:
            return 0, 0, 0, 0
        if t.dim() == 4:
            return t.stride()
        sb, sc, sl = t.stride()
        return sb, self.per_group * sc, sc, sl


def _bc_strides(t: Tensor) -> tuple[int, ...]:
    """(batch, group, state, step) strides of B or C: (b, n, l) is shared by every group."""
    if t.dim() == 3:
        return t.stride(0), 0, t.stride(1), t.stride(2)
    return t.stride()


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _device_guard(t: Tensor):
    """Launch on the tensors' GPU (Triton launches on the current device); nothing to do for the interpreter."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _param_strides(A: Tensor, D: Tensor | None, bias: Tensor | None) -> tuple[int, ...]:
    return (
        A.stride(0),
        A.stride(1),
        0 if D is None else D.stride(0),
        0 if bias is None else bias.stride(0),
    )


def _forward(
    layout: _Layout, u, delta, A, B, C, D, z, bias, softplus: bool, save_states: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the forward: (out, chunk-start states (empty unless `save_states`), last state). out is
    (b, g·DCH, l) in u's dtype, or for SS2D the merged (b, d, l) map in the accumulation dtype."""
    acc = _acc_dtype(u.dtype)
    nstate = A.shape[1]
    cfg = _config(nstate, layout.per_group, u.is_cuda)
    nchunks = triton.cdiv(layout.length, cfg.chunk)
    rows = layout.per_group if layout.ndir == 4 else layout.channels
    out = torch.empty(layout.batch, rows, layout.length, dtype=acc if layout.ndir == 4 else u.dtype, device=u.device)
    states = torch.empty(
        (layout.batch, layout.channels, nchunks, nstate) if save_states else (0, 0, 0, 0), dtype=acc, device=u.device
    )
    last = torch.empty(layout.batch, layout.channels, nstate, dtype=acc, device=u.device)
    grid = (triton.cdiv(layout.per_group, cfg.block_d_fwd), layout.groups // layout.ndir, layout.batch)
    with _device_guard(u):
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, u if D is None else D, u if z is None else z, u if bias is None else bias,
            out, states, last,
            layout.length, layout.h, layout.w, layout.per_group, layout.channels, nstate, nchunks,
            *layout.map_strides(u), *layout.map_strides(out), *layout.seq_strides(delta), *layout.seq_strides(z),
            *_bc_strides(B), *_bc_strides(C), *_param_strides(A, D, bias),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
            NDIR=layout.ndir, SAVE_STATES=save_states, ACC=_tl_dtype(acc), BLOCK_D=cfg.block_d_fwd,
            BLOCK_N=cfg.block_n, CHUNK=cfg.chunk, num_warps=cfg.warps,
        )  # fmt: skip
    return out, states, last


def _backward(layout: _Layout, u, delta, A, B, C, D, z, bias, softplus: bool, states: Tensor, dout: Tensor):
    """Launch the backward: du (map, as out), ddelta, dz (b, g·DCH, l), and dA, dD, dbias, dB, dC reduced
    over the programs' partials; everything in the accumulation dtype."""
    acc = _acc_dtype(u.dtype)
    nstate = A.shape[1]
    cfg = _config(nstate, layout.per_group, u.is_cuda)
    nblk = triton.cdiv(layout.per_group, cfg.block_d_bwd)
    nchunks = states.shape[2]
    batch, channels, length = layout.batch, layout.channels, layout.length
    rows = layout.per_group if layout.ndir == 4 else channels
    dev = u.device
    du = torch.empty(batch, rows, length, dtype=acc, device=dev)
    ddelta = torch.empty(batch, channels, length, dtype=acc, device=dev)
    dz = torch.empty(batch, channels, length, dtype=acc, device=dev) if z is not None else None
    dA = torch.empty(batch, channels, nstate, dtype=acc, device=dev)
    dD = torch.empty(batch, channels, dtype=acc, device=dev)
    dbias = torch.empty(batch, channels, dtype=acc, device=dev)
    dB = torch.empty(batch, layout.groups, nblk, nstate, length, dtype=acc, device=dev)
    dC = torch.empty_like(dB)
    grid = (nblk, layout.groups // layout.ndir, batch)
    with _device_guard(u):
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, u if D is None else D, u if z is None else z, u if bias is None else bias,
            dout, states, du, ddelta, ddelta if dz is None else dz, dA, dD, dbias, dB, dC,
            length, layout.h, layout.w, layout.per_group, channels, nstate, nchunks, nblk,
            *layout.map_strides(u), *layout.map_strides(dout), *layout.map_strides(du),
            *layout.seq_strides(delta), *layout.seq_strides(z),
            *_bc_strides(B), *_bc_strides(C), *_param_strides(A, D, bias),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
            NDIR=layout.ndir, ACC=_tl_dtype(acc), BLOCK_D=cfg.block_d_bwd, BLOCK_N=cfg.block_n, CHUNK=cfg.chunk,
            num_warps=cfg.warps,
        )  # fmt: skip
    return du, ddelta, dz, dA.sum(0), dD.sum(0), dbias.sum(0), dB.sum(2), dC.sum(2)


def _grad_bc(grad: Tensor, like: Tensor) -> Tensor:
    """(b, g, n, l) gradient of B or C back to its own shape and dtype ((b, n, l) when ungrouped)."""
    return (grad.squeeze(1) if like.dim() == 3 else grad).to(like.dtype)


def _maybe(grad: Tensor | None, like: Tensor | None, needed: bool) -> Tensor | None:
    if like is None or not needed or grad is None:
        return None
    return grad.view(like.shape).to(like.dtype)


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        groups = 1 if B.dim() == 3 else B.shape[1]
        batch, channels, length = u.shape
        layout = _Layout(batch, groups, channels // groups, 1, 1, length)
        save = any(ctx.needs_input_grad[:8])
        out, states, last = _forward(layout, u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), save)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.layout = layout
        ctx.delta_softplus = bool(delta_softplus)
        ctx.mark_non_differentiable(last)
        return out, last.float()

    @staticmethod
    def backward(ctx, dout, _dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        du, ddelta, dz, dA, dD, dbias, dB, dC = _backward(
            ctx.layout, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, states, dout
        )
        need = ctx.needs_input_grad
        return (
            _maybe(du, u, need[0]),
            _maybe(ddelta, delta, need[1]),
            _maybe(dA, A, need[2]),
            _grad_bc(dB, B) if need[3] else None,
            _grad_bc(dC, C) if need[4] else None,
            _maybe(dD, D, need[5]),
            _maybe(dz, z, need[6]),
            _maybe(dbias, delta_bias, need[7]),
            None,
            None,
        )


def selective_scan_triton(
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
    """Same contract as `selective_scan_reference`, with a backward (the last state has no gradient)."""
    out, last = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return (out, last) if return_last_state else out


class _SS2DScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        batch, channels, h, w = u.shape
        layout = _Layout(batch, 4, channels, 4, h, w)
        save = any(ctx.needs_input_grad[:7])
        out, states, _ = _forward(layout, u, delta, A, B, C, D, None, delta_bias, bool(delta_softplus), save)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        ctx.layout = layout
        ctx.delta_softplus = bool(delta_softplus)
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        du, ddelta, _, dA, dD, dbias, dB, dC = _backward(
            ctx.layout, u, delta, A, B, C, D, None, delta_bias, ctx.delta_softplus, states, dout
        )
        need = ctx.needs_input_grad
        return (
            _maybe(du, u, need[0]),
            _maybe(ddelta, delta, need[1]),
            _maybe(dA, A, need[2]),
            dB.to(B.dtype) if need[3] else None,
            dC.to(C.dtype) if need[4] else None,
            _maybe(dD, D, need[5]),
            _maybe(dbias, delta_bias, need[6]),
            None,
        )


def ss2d_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """Same contract as `mdseg.kernels.ss2d.ss2d_scan`, fused: the kernels read the four scan orders from the
    map and merge into it, never materialising them."""
    return _SS2DScanTriton.apply(u, delta, A, B, C, D, delta_bias, delta_softplus)
