"""The `cpu` backend: selective scan forward and backward as numba kernels.

Why it is fast: one thread scans one channel row at a time; everything that does not depend on the running
state (softplus, exp(Δ·A), Δ·u, the z gate) is computed in separate loops over time that LLVM vectorises,
and `exp`/`log1p` are our own branch-free float32 routines (range reduction + polynomial, exponent built by
a bit cast) because libm calls do not vectorise. For d_state > 1 the inner loop runs over the state
dimension, so the n exponentials of one step go through the SIMD units together. Only the recurrence
itself stays sequential.

The backward recomputes the forward states of a row into a per-thread buffer, then runs the reverse-time
scan h_t = a_{t+1}·h_{t+1} + ∂L/∂y_t·C_t. Gradients of B and C (shared by the channels of a group) are
summed per work unit into private buffers and reduced afterwards, so no two threads write the same memory
and the result does not depend on the thread count.

float32 uses the fast routines (relative error ~2e-7); float64 uses libm (exact, for gradcheck);
half-precision inputs are computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload
from torch import Tensor

_F32 = np.float32
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693359375)
_LN2_LO = _F32(-2.12194440e-4)
_EXP_LO = _F32(-87.0)
_EXP_HI = _F32(88.0)
_C2, _C3, _C4, _C5, _C6 = (_F32(1 / math.factorial(k)) for k in range(2, 7))
_ONE = _F32(1.0)
_TWO = _F32(2.0)
_ZERO = _F32(0.0)
_A3, _A5, _A7, _A9, _A11 = (_F32(1.0 / k) for k in (3, 5, 7, 9, 11))

# No Python zero-division checks (they block vectorisation of every loop with a division); fast math.
_JIT = {"fastmath": True, "error_model": "numpy"}
_FASTMATH = True

# Work units for the backward: at least this many per scan so every core gets work whatever the batch.
_MIN_UNITS = 16


@intrinsic
def _bits_to_f32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (vectorisable, unlike a libm call)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if value.type.width != 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@njit(inline="always", fastmath=True, error_model="numpy")
def _exp_f32(x):
    x = min(max(x, _EXP_LO), _EXP_HI)
    k = np.floor(x * _LOG2E + _F32(0.5))
    r = x - k * _LN2_HI - k * _LN2_LO
    p = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * _C6)))))
    return p * _bits_to_f32((np.int32(k) + np.int32(127)) << np.int32(23))


def _exp(x):
    """exp(x): fast polynomial for float32, libm for float64 (pure-Python meaning for the overload)."""
    return math.exp(x)


@overload(_exp, inline="always", jit_options=_JIT)
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)


def _log1p_unit(e):
    """log1p(e) for e in [0, 1]."""
    return math.log1p(e)


@overload(_log1p_unit, inline="always", jit_options=_JIT)
def _log1p_unit_overload(e):
    if e == types.float32:

        def impl(e):
            # log1p(e) = 2·atanh(s) with s = e / (2 + e) in [0, 1/3]: odd series, accurate for tiny e too.
            s = e / (_TWO + e)
            s2 = s * s
            return _TWO * s * (_ONE + s2 * (_A3 + s2 * (_A5 + s2 * (_A7 + s2 * (_A9 + s2 * _A11)))))

        return impl
    return lambda e: math.log1p(e)


def _softplus(v):
    """log(1 + exp(v)), overflow-free."""
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


@overload(_softplus, inline="always", jit_options=_JIT)
def _softplus_overload(v):
    if v == types.float32:
        return lambda v: max(v, _ZERO) + _log1p_unit(_exp_f32(-abs(v)))
    return lambda v: max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


@overload(_sigmoid, inline="always", jit_options=_JIT)
def _sigmoid_overload(v):
    if v == types.float32:
        return lambda v: _ONE / (_ONE + _exp_f32(-v))
    return lambda v: 1.0 / (1.0 + math.exp(-v))


def _one(arr):
    """1 in the array's dtype (numba would promote a bare literal mixed with float32 to float64)."""
    return arr.dtype.type(1)


@overload(_one, inline="always", jit_options=_JIT)
def _one_overload(arr):
    if arr.dtype == types.float32:
        return lambda arr: _ONE
    return lambda arr: 1.0


@njit(inline="always", **_JIT)
def _time_steps(delta_row, bias, softplus, dt):
    """dt = softplus(delta + bias), or delta + bias, for one row."""
    if softplus:
        for t in range(dt.shape[0]):
            dt[t] = _softplus(delta_row[t] + bias)
    else:
        for t in range(dt.shape[0]):
            dt[t] = delta_row[t] + bias


@njit(inline="always", **_JIT)
def _time_steps_lowrank(delta_low, weight_row, bias, softplus, dt, zero):
    """dt = softplus(weight_row · delta_low + bias), or without softplus, for one row: the Δ projection
    (rank r, delta_low (r, l)) done here, a multiply-add per rank over time that LLVM vectorises."""
    for t in range(dt.shape[0]):
        dt[t] = zero
    for r in range(delta_low.shape[0]):
        wr = weight_row[r]
        for t in range(dt.shape[0]):
            dt[t] += wr * delta_low[r, t]
    _time_steps(dt, bias, softplus, dt)


@njit(inline="always", **_JIT)
def _decay_and_input(dt, u_row, B_row, a0, decay, inp):
    """d_state 1: decay_t = exp(dt_t·a0) and input_t = dt_t·u_t·B_t (a loop LLVM vectorises)."""
    for t in range(dt.shape[0]):
        decay[t] = _exp(dt[t] * a0)
        inp[t] = dt[t] * u_row[t] * B_row[t, 0]


@njit(inline="always", **_JIT)
def _recur1(decay, inp, c_row, y, zero):
    """d_state 1: x_t = decay_t·x_{t-1} + input_t, y_t = C_t·x_t; returns the last state."""
    x = zero
    for t in range(y.shape[0]):
        x = decay[t] * x + inp[t]
        y[t] = x * c_row[t]
    return x


@njit(inline="always", **_JIT)
def _recur4(decay, inp, c0, c1, c2, c3, y0, y1, y2, y3, zero):
    """Four independent d_state-1 recurrences in one loop: their multiply-adds overlap in the pipeline,
    where one chain alone would wait on each one's latency. Returns the four last states."""
    x0 = zero
    x1 = zero
    x2 = zero
    x3 = zero
    for t in range(y0.shape[0]):
        x0 = decay[0, t] * x0 + inp[0, t]
        x1 = decay[1, t] * x1 + inp[1, t]
        x2 = decay[2, t] * x2 + inp[2, t]
        x3 = decay[3, t] * x3 + inp[3, t]
        y0[t] = x0 * c0[t]
        y1[t] = x1 * c1[t]
        y2[t] = x2 * c2[t]
        y3[t] = x3 * c3[t]
    return x0, x1, x2, x3


@njit(inline="always", **_JIT)
def _scan_states(dt, u_row, A_row, B_row, C_row, x, y, zero):
    """d_state n > 1: the n exponentials and multiply-adds of a step run over the state axis (SIMD)."""
    for n in range(x.shape[0]):
        x[n] = zero
    for t in range(y.shape[0]):
        dtv = dt[t]
        duv = dtv * u_row[t]
        acc = zero
        for n in range(x.shape[0]):
            xn = _exp(dtv * A_row[n]) * x[n] + duv * B_row[t, n]
            x[n] = xn
            acc += xn * C_row[t, n]
        y[t] = acc


@njit(inline="always", **_JIT)
def _add_skip(y, u_row, dskip):
    for t in range(y.shape[0]):
        y[t] += dskip * u_row[t]


@njit(inline="always", **_JIT)
def _gate(y, z_row):
    for t in range(y.shape[0]):
        y[t] *= z_row[t] * _sigmoid(z_row[t])


@njit(inline="always", **_JIT)
def _row_backward(  # noqa: C901
    u_row, delta_row, A_row, B_row, C_row, dskip, dbias, softplus, has_z, z_row, dout_row,
    du_row, ddelta_row, dz_row, dB_row, dC_row, gA, xs, dt, gy, decay, inp, hs, h, a_buf, hn_buf, one,
):  # fmt: skip
    """Gradients of one channel row: writes du, ddelta (and dz), adds into dB_row/dC_row (l, n), writes gA (n,);
    returns (dL/dD, dL/dbias). Recomputes the row's forward states into xs (l + 1, n) first."""
    zero = one - one
    length = u_row.shape[0]
    nstate = A_row.shape[0]
    _time_steps(delta_row, dbias, softplus, dt)
    for n in range(nstate):
        xs[0, n] = zero
    if nstate == 1:
        _decay_and_input(dt, u_row, B_row, A_row[0], decay[:length], inp)
        xv = zero
        for t in range(length):
            xv = decay[t] * xv + inp[t]
            xs[t + 1, 0] = xv
    else:
        for t in range(length):
            dtv = dt[t]
            duv = dtv * u_row[t]
            for n in range(nstate):
                xs[t + 1, n] = _exp(dtv * A_row[n]) * xs[t, n] + duv * B_row[t, n]
    # through the gate: gy = dL/dy with y = <C, x> + D·u
    if has_z:
        for t in range(length):
            yt = dskip * u_row[t]
            for n in range(nstate):
                yt += C_row[t, n] * xs[t + 1, n]
            sz = _sigmoid(z_row[t])
            dz_row[t] = dout_row[t] * yt * sz * (one + z_row[t] * (one - sz))
            gy[t] = dout_row[t] * z_row[t] * sz
    else:
        for t in range(length):
            gy[t] = dout_row[t]
    gskip = zero
    for t in range(length):
        gskip += gy[t] * u_row[t]
    # reverse-time scan: h_t = dL/dx_t = gy_t·C_t + a_{t+1}·h_{t+1}
    if nstate == 1:
        a0 = A_row[0]
        decay[length] = zero
        hv = zero
        for t in range(length - 1, -1, -1):
            hv = decay[t + 1] * hv + gy[t] * C_row[t, 0]
            hs[t] = hv
        ga_sum = zero
        for t in range(length):
            hv = hs[t]
            dtv = dt[t]
            ut = u_row[t]
            dC_row[t, 0] += gy[t] * xs[t + 1, 0]
            dB_row[t, 0] += hv * dtv * ut
            ga = hv * xs[t, 0] * decay[t]
            ga_sum += ga * dtv
            gdu = hv * B_row[t, 0]
            du_row[t] = gy[t] * dskip + gdu * dtv
            ddelta_row[t] = ga * a0 + gdu * ut
        gA[0] = ga_sum
    else:
        for n in range(nstate):
            h[n] = zero
            gA[n] = zero
        # Each inner loop touches few arrays: with more, LLVM's alias checks give up on vectorising.
        for t in range(length - 1, -1, -1):
            g = gy[t]
            dtv = dt[t]
            ut = u_row[t]
            dut = dtv * ut
            x_prev = xs[t]
            x_now = xs[t + 1]
            c_t = C_row[t]
            b_t = B_row[t]
            dc_t = dC_row[t]
            db_t = dB_row[t]
            for n in range(nstate):
                a_buf[n] = _exp(dtv * A_row[n])
                hn_buf[n] = h[n] + g * c_t[n]
            for n in range(nstate):
                dc_t[n] += g * x_now[n]
                db_t[n] += hn_buf[n] * dut
            gdt = zero
            gdu = zero
            for n in range(nstate):
                ga = hn_buf[n] * x_prev[n] * a_buf[n]
                gdt += ga * A_row[n]
                gA[n] += ga * dtv
                gdu += hn_buf[n] * b_t[n]
            for n in range(nstate):
                h[n] = hn_buf[n] * a_buf[n]
            du_row[t] = g * dskip + gdu * dtv
            ddelta_row[t] = gdt + gdu * ut
    # through softplus: d softplus(v)/dv = sigmoid(v)
    if softplus:
        for t in range(length):
            ddelta_row[t] *= _sigmoid(delta_row[t] + dbias)
    gbias = zero
    for t in range(length):
        gbias += ddelta_row[t]
    return gskip, gbias


@njit(inline="always", **_JIT)
def _row_backward_scratch(u, length, nstate):
    """Per-thread buffers of `_row_backward`, allocated once per work unit: xs (l + 1, n) with xs[t + 1] the
    state after step t, dt, gy, decay (l + 1), input, hs (l,), and h, a_buf, hn_buf (n,)."""
    return (
        np.empty((length + 1, nstate), u.dtype),
        np.empty(length, u.dtype),
        np.empty(length, u.dtype),
        np.empty(length + 1, u.dtype),
        np.empty(length, u.dtype),
        np.empty(length, u.dtype),
        np.empty(nstate, u.dtype),
        np.empty(nstate, u.dtype),
        np.empty(nstate, u.dtype),
    )


_ROWS = 4  # rows whose d_state-1 recurrences run interleaved (see _recur4)


@njit(parallel=True, cache=True, **_JIT)
def _forward(u, delta, A, Bt, Ct, Dv, z, bias, softplus, has_d, has_z, has_bias, out, last):  # noqa: C901
    """u, delta, z, out: (b, d, l); A (d, n); Bt, Ct (b, g, l, n); Dv, bias (d,); last (b, d, n)."""
    nbatch, nchan, length = u.shape
    nstate = A.shape[1]
    per_group = nchan // Bt.shape[1]
    nrows = nbatch * nchan
    one = _one(u)
    zero = one - one
    for block in prange((nrows + _ROWS - 1) // _ROWS):
        first = np.int64(block) * _ROWS
        count = min(_ROWS, nrows - first)
        dt = np.empty(length, u.dtype)
        if nstate == 1:
            decay = np.empty((_ROWS, length), u.dtype)
            inp = np.empty((_ROWS, length), u.dtype)
            for k in range(count):
                bi, di = divmod(first + k, nchan)
                _time_steps(delta[bi, di], bias[di] if has_bias else zero, softplus, dt)
                _decay_and_input(dt, u[bi, di], Bt[bi, di // per_group], A[di, 0], decay[k], inp[k])
            if count == _ROWS:
                b0, d0 = divmod(first, nchan)
                b1, d1 = divmod(first + 1, nchan)
                b2, d2 = divmod(first + 2, nchan)
                b3, d3 = divmod(first + 3, nchan)
                x0, x1, x2, x3 = _recur4(
                    decay, inp,
                    Ct[b0, d0 // per_group, :, 0], Ct[b1, d1 // per_group, :, 0],
                    Ct[b2, d2 // per_group, :, 0], Ct[b3, d3 // per_group, :, 0],
                    out[b0, d0], out[b1, d1], out[b2, d2], out[b3, d3], zero,
                )  # fmt: skip
                last[b0, d0, 0] = x0
                last[b1, d1, 0] = x1
                last[b2, d2, 0] = x2
                last[b3, d3, 0] = x3
            else:
                for k in range(count):
                    bi, di = divmod(first + k, nchan)
                    c_row = Ct[bi, di // per_group, :, 0]
                    last[bi, di, 0] = _recur1(decay[k], inp[k], c_row, out[bi, di], zero)
        else:
            for k in range(count):
                bi, di = divmod(first + k, nchan)
                gi = di // per_group
                _time_steps(delta[bi, di], bias[di] if has_bias else zero, softplus, dt)
                _scan_states(dt, u[bi, di], A[di], Bt[bi, gi], Ct[bi, gi], last[bi, di], out[bi, di], zero)
        for k in range(count):
            bi, di = divmod(first + k, nchan)
            if has_d:
                _add_skip(out[bi, di], u[bi, di], Dv[di])
            if has_z:
                _gate(out[bi, di], z[bi, di])


@njit(parallel=True, cache=True, **_JIT)
def _backward(
    u, delta, A, Bt, Ct, Dv, z, bias, softplus, has_d, has_z, has_bias, dout, splits,
    du_out, ddelta, dz, dA_part, dD_part, dbias_part, dB_part, dC_part,
):  # fmt: skip
    """Gradients. Work unit = (batch, group, split): a contiguous run of the group's channels.

    Per-row partials: dA_part (b, d, n), dD_part, dbias_part (b, d). Per-unit partials: dB_part, dC_part
    (b, g, splits, l, n), summed over the unit's channels.
    """
    nbatch, nchan, length = u.shape
    nstate = A.shape[1]
    ngroups = Bt.shape[1]
    per_group = nchan // ngroups
    per_split = (per_group + splits - 1) // splits
    one = _one(u)
    zero = one - one
    for unit in prange(nbatch * ngroups * splits):
        bi, rest = divmod(np.int64(unit), ngroups * splits)
        gi, si = divmod(rest, splits)
        first = gi * per_group + si * per_split
        stop = min(first + per_split, (gi + 1) * per_group)
        xs, dt, gy, decay, inp, hs, h, a_buf, hn_buf = _row_backward_scratch(u, length, nstate)
        for di in range(first, stop):
            gskip, gbias = _row_backward(
                u[bi, di], delta[bi, di], A[di], Bt[bi, gi], Ct[bi, gi],
                Dv[di] if has_d else zero, bias[di] if has_bias else zero, softplus,
                has_z, z[bi, di] if has_z else u[bi, di], dout[bi, di],
                du_out[bi, di], ddelta[bi, di], dz[bi, di] if has_z else dt,
                dB_part[bi, gi, si], dC_part[bi, gi, si], dA_part[bi, di],
                xs, dt, gy, decay, inp, hs, h, a_buf, hn_buf, one,
            )  # fmt: skip
            dD_part[bi, di] = gskip
            dbias_part[bi, di] = gbias


@njit(inline="always", **_JIT)
def _direction_time_steps(delta, proj, ch, k, rank, bias, softplus, dt, zero):
    """dt of row ch (direction k) of `_forward_2d`: from delta (4·d, l), or with rank > 0 from the low-rank
    factor delta (4·r, l) rows k·r … (k+1)·r − 1 and proj[ch]."""
    if rank > 0:
        _time_steps_lowrank(delta[k * rank : (k + 1) * rank], proj[ch], bias, softplus, dt, zero)
    else:
        _time_steps(delta[ch], bias, softplus, dt)


@njit(inline="always", **_JIT)
def _gather_directions(src, colidx, dst):
    """Map-order row (h·w,) -> its four SS2D scan orders dst (4, h·w): row-major, column-major
    (colidx[t] = map index of column-major step t) and both reversed."""
    length = src.shape[0]
    for t in range(length):
        dst[0, t] = src[t]
        dst[2, length - 1 - t] = src[t]
    for t in range(length):
        v = src[colidx[t]]
        dst[1, t] = v
        dst[3, length - 1 - t] = v


@njit(inline="always", **_JIT)
def _merge_directions(ys, colpos, out):
    """The adjoint of `_gather_directions`: out[p] = sum over the four orders of their value at pixel p
    (colpos[p] = column-major step of map index p)."""
    length = out.shape[0]
    for p in range(length):
        out[p] = ys[0, p] + ys[2, length - 1 - p]
    for p in range(length):
        q = colpos[p]
        out[p] += ys[1, q] + ys[3, length - 1 - q]


@njit(parallel=True, cache=True, **_JIT)
def _forward_2d(u, delta, proj, A, Bt, Ct, Dv, bias, softplus, has_d, has_bias, colidx, colpos, block, out, last):
    """SS2D straight from the map: u, out indexed (b, h·w, d) in map order, any strides (a channels-last map
    is read and written in place); delta (b, 4·d, h·w), or with a projection proj (4·d, r) its low-rank
    factor (b, 4·r, h·w), and Bt, Ct (b, 4, h·w, n) in each direction's scan order; A (4·d, n);
    Dv, bias (4·d,); last (b, 4·d, n). out = cross-merge of the four directions' outputs.

    A work unit is `block` channels of one batch item: their map rows are copied in, and their outputs out,
    one pixel (`block` neighbouring values) at a time. Read one channel at a time, a channels-last map costs a
    cache line per pixel per channel (the map's rows are the channels' stride apart), which made the
    strided reads and writes most of the kernel's time at the `tiny` model's first stage."""
    nbatch, length, nchan = u.shape
    nstate = A.shape[1]
    rank = proj.shape[1]
    one = _one(u)
    zero = one - one
    nblocks = (nchan + block - 1) // block
    for unit in prange(nbatch * nblocks):
        bi, first = divmod(np.int64(unit), nblocks)
        first *= block
        count = min(block, nchan - first)
        ublock = np.empty((count, length), u.dtype)
        oblock = np.empty((count, length), u.dtype)
        for t in range(length):
            for j in range(count):
                ublock[j, t] = u[bi, t, first + j]
        useq = np.empty((4, length), u.dtype)
        ys = np.empty((4, length), u.dtype)
        dt = np.empty(length, u.dtype)
        decay = np.empty((4, length), u.dtype)
        inp = np.empty((4, length), u.dtype)
        for j in range(count):
            di = first + j
            _gather_directions(ublock[j], colidx, useq)
            if nstate == 1:
                for k in range(4):
                    ch = k * nchan + di
                    bk = bias[ch] if has_bias else zero
                    _direction_time_steps(delta[bi], proj, ch, k, rank, bk, softplus, dt, zero)
                    _decay_and_input(dt, useq[k], Bt[bi, k], A[ch, 0], decay[k], inp[k])
                x0, x1, x2, x3 = _recur4(
                    decay, inp, Ct[bi, 0, :, 0], Ct[bi, 1, :, 0], Ct[bi, 2, :, 0], Ct[bi, 3, :, 0],
                    ys[0], ys[1], ys[2], ys[3], zero,
                )  # fmt: skip
                last[bi, di, 0] = x0
                last[bi, nchan + di, 0] = x1
                last[bi, 2 * nchan + di, 0] = x2
                last[bi, 3 * nchan + di, 0] = x3
            else:
                for k in range(4):
                    ch = k * nchan + di
                    bk = bias[ch] if has_bias else zero
                    _direction_time_steps(delta[bi], proj, ch, k, rank, bk, softplus, dt, zero)
                    _scan_states(dt, useq[k], A[ch], Bt[bi, k], Ct[bi, k], last[bi, ch], ys[k], zero)
            if has_d:
                for k in range(4):
                    _add_skip(ys[k], useq[k], Dv[k * nchan + di])
            _merge_directions(ys, colpos, oblock[j])
        for t in range(length):
            for j in range(count):
                out[bi, t, first + j] = oblock[j, t]


@njit(parallel=True, cache=True, **_JIT)
def _backward_2d(
    u, delta, A, Bt, Ct, Dv, bias, softplus, has_d, has_bias, colidx, colpos, dout, splits,
    du_out, ddelta, dA_part, dD_part, dbias_part, dB_part, dC_part,
):  # fmt: skip
    """Gradients of `_forward_2d`. Work unit = (batch, split): a run of channels, all four directions each.
    dA_part (b, 4·d, n), dD_part, dbias_part (b, 4·d); dB_part, dC_part (b, splits, 4, h·w, n)."""
    nbatch, nchan, length = u.shape
    nstate = A.shape[1]
    per_split = (nchan + splits - 1) // splits
    one = _one(u)
    zero = one - one
    for unit in prange(nbatch * splits):
        bi, si = divmod(np.int64(unit), splits)
        xs, dt, gy, decay, inp, hs, h, a_buf, hn_buf = _row_backward_scratch(u, length, nstate)
        useq = np.empty((4, length), u.dtype)
        gseq = np.empty((4, length), u.dtype)
        duseq = np.empty((4, length), u.dtype)
        for di in range(si * per_split, min((si + 1) * per_split, nchan)):
            _gather_directions(u[bi, di], colidx, useq)
            _gather_directions(dout[bi, di], colidx, gseq)
            for k in range(4):
                ch = k * nchan + di
                gskip, gbias = _row_backward(
                    useq[k], delta[bi, ch], A[ch], Bt[bi, k], Ct[bi, k],
                    Dv[ch] if has_d else zero, bias[ch] if has_bias else zero, softplus,
                    False, dt, gseq[k], duseq[k], ddelta[bi, ch], dt,
                    dB_part[bi, si, k], dC_part[bi, si, k], dA_part[bi, ch],
                    xs, dt, gy, decay, inp, hs, h, a_buf, hn_buf, one,
                )  # fmt: skip
                dD_part[bi, ch] = gskip
                dbias_part[bi, ch] = gbias
            _merge_directions(duseq, colpos, du_out[bi, di])


def _set_threads() -> None:
    """Use as many numba threads as torch does (so `--threads` / torch.set_num_threads rule both)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _grouped_t(bc: Tensor, dtype: torch.dtype) -> Tensor:
    """(b, n, l) or (b, g, n, l) -> contiguous (b, g, l, n): the state dimension innermost for the kernels."""
    if bc.dim() == 3:
        bc = bc.unsqueeze(1)
    return bc.to(dtype).transpose(2, 3).contiguous()


def _np(t: Tensor | None, dtype: torch.dtype, ndim: int) -> np.ndarray:
    if t is None:
        return np.empty((0,) * ndim, dtype=np.float64 if dtype == torch.float64 else np.float32)
    return t.detach().to(dtype).contiguous().numpy()


def _splits(nbatch: int, ngroups: int, per_group: int) -> int:
    """Channel splits per (batch, group) for the backward; depends on shapes only (deterministic sums)."""
    return max(1, min(per_group, -(-_MIN_UNITS // (nbatch * ngroups))))


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        dtype = _compute_dtype(u.dtype)
        nbatch, nchan, _ = u.shape
        arrays = (
            _np(u, dtype, 3),
            _np(delta, dtype, 3),
            _np(A, dtype, 2),
            _grouped_t(B.detach(), dtype).numpy(),
            _grouped_t(C.detach(), dtype).numpy(),
            _np(D, dtype, 1),
            _np(z, dtype, 3),
            _np(delta_bias, dtype, 1),
        )
        out = torch.empty(u.shape, dtype=dtype)
        last = torch.empty(nbatch, nchan, A.shape[1], dtype=dtype)
        _set_threads()
        _forward(*arrays, bool(delta_softplus), D is not None, z is not None, delta_bias is not None,
                 out.numpy(), last.numpy())  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = bool(delta_softplus)
        ctx.mark_non_differentiable(last)
        return out.to(u.dtype), last.float()

    @staticmethod
    def backward(ctx, dout, _dlast):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        dtype = _compute_dtype(u.dtype)
        nbatch, nchan, length = u.shape
        nstate = A.shape[1]
        Bt = _grouped_t(B, dtype)
        Ct = _grouped_t(C, dtype)
        ngroups = Bt.shape[1]
        splits = _splits(nbatch, ngroups, nchan // ngroups)
        du = torch.empty(u.shape, dtype=dtype)
        ddelta = torch.empty(u.shape, dtype=dtype)
        dz = torch.zeros(u.shape if z is not None else (0, 0, 0), dtype=dtype)
        dA_part = torch.empty(nbatch, nchan, nstate, dtype=dtype)
        dD_part = torch.empty(nbatch, nchan, dtype=dtype)
        dbias_part = torch.empty(nbatch, nchan, dtype=dtype)
        dB_part = torch.zeros(nbatch, ngroups, splits, length, nstate, dtype=dtype)
        dC_part = torch.zeros(nbatch, ngroups, splits, length, nstate, dtype=dtype)
        _set_threads()
        _backward(
            _np(u, dtype, 3), _np(delta, dtype, 3), _np(A, dtype, 2), Bt.numpy(), Ct.numpy(),
            _np(D, dtype, 1), _np(z, dtype, 3), _np(delta_bias, dtype, 1),
            ctx.delta_softplus, D is not None, z is not None, delta_bias is not None,
            _np(dout, dtype, 3), splits,
            du.numpy(), ddelta.numpy(), dz.numpy(), dA_part.numpy(), dD_part.numpy(), dbias_part.numpy(),
            dB_part.numpy(), dC_part.numpy(),
        )  # fmt: skip

        def back_bc(part: Tensor, like: Tensor) -> Tensor:
            grad = part.sum(2).transpose(2, 3)  # (b, g, n, l)
            return (grad.squeeze(1) if like.dim() == 3 else grad).to(like.dtype)

        return (
            du.to(u.dtype),
            ddelta.to(delta.dtype),
            dA_part.sum(0).to(A.dtype),
            back_bc(dB_part, B),
            back_bc(dC_part, C),
            None if D is None else dD_part.sum(0).to(D.dtype),
            None if z is None else dz.to(z.dtype),
            None if delta_bias is None else dbias_part.sum(0).to(delta_bias.dtype),
            None,
            None,
        )


def selective_scan_cpu(
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
    """Same contract as `selective_scan_reference`, on CPU tensors, with a backward."""
    out, last = _SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return (out, last) if return_last_state else out


def _map_and_output(u: Tensor, dtype: torch.dtype) -> tuple[np.ndarray, Tensor]:
    """Map u (b, d, h, w) as the array (b, h·w, d) `_forward_2d` reads, and the (b, d, h·w) output it writes
    (through its transpose), both in u's memory layout: a channels-last u is read in place and gives an output
    whose (b, h·w, d) transpose is contiguous (what the LayerNorm after the scan wants), so neither the map
    nor the output is reordered; any other u is made contiguous and gives a contiguous output."""
    nbatch, nchan, h, w = u.shape
    if u.dim() == 4 and u.permute(0, 2, 3, 1).is_contiguous() and not u.is_contiguous():
        u_map = u.detach().to(dtype).permute(0, 2, 3, 1).reshape(nbatch, h * w, nchan)
        out = torch.empty(nbatch, h * w, nchan, dtype=dtype).transpose(1, 2)
    else:
        u_map = u.detach().to(dtype).reshape(nbatch, nchan, h * w).contiguous().transpose(1, 2)
        out = torch.empty(nbatch, nchan, h * w, dtype=dtype)
    return u_map.numpy(), out


def _channel_block(nbatch: int, nchan: int) -> int:
    """Channels per work unit of `_forward_2d`: 16 (a cache line of float32), halved until there are at least
    two units per thread, so a small batch still keeps every core busy."""
    block = 16
    while block > 1 and nbatch * -(-nchan // block) < 2 * numba.get_num_threads():
        block //= 2
    return block


@lru_cache(maxsize=32)
def _column_major_maps(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """colidx[t]: map index (row-major) of column-major step t; colpos[p]: column-major step of map index p."""
    colidx = np.arange(h * w, dtype=np.int64).reshape(h, w).T.reshape(-1).copy()
    colpos = np.empty_like(colidx)
    colpos[colidx] = np.arange(h * w, dtype=np.int64)
    return colidx, colpos


class _SS2DScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        dtype = _compute_dtype(u.dtype)
        nbatch, nchan, h, w = u.shape
        colidx, colpos = _column_major_maps(h, w)
        u_map, out = _map_and_output(u, dtype)
        last = torch.empty(nbatch, 4 * nchan, A.shape[1], dtype=dtype)
        _set_threads()
        _forward_2d(
            u_map, _np(delta.reshape(nbatch, 4 * nchan, h * w), dtype, 3), _np(None, dtype, 2), _np(A, dtype, 2),
            _grouped_t(B.detach(), dtype).numpy(), _grouped_t(C.detach(), dtype).numpy(),
            _np(D, dtype, 1), _np(delta_bias, dtype, 1), bool(delta_softplus), D is not None,
            delta_bias is not None, colidx, colpos, _channel_block(nbatch, nchan), out.transpose(1, 2).numpy(),
            last.numpy(),
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        ctx.delta_softplus = bool(delta_softplus)
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        dtype = _compute_dtype(u.dtype)
        nbatch, nchan, h, w = u.shape
        length = h * w
        nstate = A.shape[1]
        colidx, colpos = _column_major_maps(h, w)
        splits = _splits(nbatch, 1, nchan)
        du = torch.empty(nbatch, nchan, length, dtype=dtype)
        ddelta = torch.empty(nbatch, 4 * nchan, length, dtype=dtype)
        dA_part = torch.empty(nbatch, 4 * nchan, nstate, dtype=dtype)
        dD_part = torch.empty(nbatch, 4 * nchan, dtype=dtype)
        dbias_part = torch.empty(nbatch, 4 * nchan, dtype=dtype)
        dB_part = torch.zeros(nbatch, splits, 4, length, nstate, dtype=dtype)
        dC_part = torch.zeros(nbatch, splits, 4, length, nstate, dtype=dtype)
        _set_threads()
        _backward_2d(
            _np(u.reshape(nbatch, nchan, length), dtype, 3), _np(delta.reshape(nbatch, 4 * nchan, length), dtype, 3),
            _np(A, dtype, 2), _grouped_t(B, dtype).numpy(), _grouped_t(C, dtype).numpy(),
            _np(D, dtype, 1), _np(delta_bias, dtype, 1), ctx.delta_softplus, D is not None,
            delta_bias is not None, colidx, colpos, _np(dout, dtype, 3), splits,
            du.numpy(), ddelta.numpy(), dA_part.numpy(), dD_part.numpy(), dbias_part.numpy(),
            dB_part.numpy(), dC_part.numpy(),
        )  # fmt: skip
        return (
            du.view(u.shape).to(u.dtype),
            ddelta.view(delta.shape).to(delta.dtype),
            dA_part.sum(0).to(A.dtype),
            dB_part.sum(1).transpose(2, 3).to(B.dtype),
            dC_part.sum(1).transpose(2, 3).to(C.dtype),
            None if D is None else dD_part.sum(0).to(D.dtype),
            None if delta_bias is None else dbias_part.sum(0).to(delta_bias.dtype),
            None,
        )


def ss2d_scan_cpu(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """Same contract as `mdseg.kernels.ss2d.ss2d_scan`, fused: the four scan orders are read from and merged
    into the map inside the kernel, never materialised."""
    return _SS2DScanCPU.apply(u, delta, A, B, C, D, delta_bias, delta_softplus)


def ss2d_scan_lowrank_cpu(
    u: Tensor,
    delta_low: Tensor,
    delta_proj: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """`ss2d_scan_cpu` with Δ = delta_proj (4, d, r) @ delta_low (b, 4, r, h·w) computed inside the kernel,
    row by row, so the (b, 4, d, h·w) Δ is never written nor read back. Forward only (no autograd)."""
    dtype = _compute_dtype(u.dtype)
    nbatch, nchan, h, w = u.shape
    rank = delta_low.shape[2]
    colidx, colpos = _column_major_maps(h, w)
    u_map, out = _map_and_output(u, dtype)
    last = torch.empty(nbatch, 4 * nchan, A.shape[1], dtype=dtype)
    _set_threads()
    with torch.profiler.record_function("ss2d_scan_lowrank_cpu"):
        _forward_2d(
            u_map, _np(delta_low.reshape(nbatch, 4 * rank, h * w), dtype, 3),
            _np(delta_proj.reshape(4 * nchan, rank), dtype, 2), _np(A, dtype, 2),
            _grouped_t(B.detach(), dtype).numpy(), _grouped_t(C.detach(), dtype).numpy(), _np(D, dtype, 1),
            _np(delta_bias, dtype, 1), bool(delta_softplus), D is not None, delta_bias is not None, colidx, colpos,
            _channel_block(nbatch, nchan), out.transpose(1, 2).numpy(), last.numpy(),
        )  # fmt: skip
    return out.to(u.dtype)
