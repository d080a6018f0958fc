"""The row op of the fused linear + KD loss as a Triton kernel: tskd_fast::fused_linear_kd_rows_triton,
defined from the spec FUSED_LINEAR_KD_ROWS of tskd_fast.ops.fused_linear_kd (schema, check, fake kernel).

The same contract as the C++ op tskd_fast::fused_linear_kd_rows (CPU and CUDA kernels; the contract
and the formulas are in csrc/include/tskd_fast/fused_linear_kd_math.h, the gradients in
docs/methods.md §5.5.1): each row's loss, and when compute_grad, grad_scale times its
gradient written over the student logits in place.

One program per row (LLM vocabularies: 32k-256k columns), walking the row in BLOCK_V-wide chunks
(1024 columns):
  A  an online pass (running maxima with rescaled sums, as in online softmax) gathers the
     normalisers, the CE normaliser, the teacher's argmax and, for forward and reverse KL, the
     cross sum that gives the loss without another pass;
  B  JSD, the skews, TVD and label-smoothed rows sum their per-column terms (the loss and
     Gbar = sum_k q_k dD/dq_k) in a second read;
  C  a last read writes the gradient (S / tau)(u_k - q_k Gbar) + CE over the student logits.
Top-k rows save the listed student logits to a scratch row and mask them with -inf in place, so that
pass A gives the tail bucket's statistics directly (no cancelling subtraction); the K + 1 buckets
are then walked in BLOCK_K-wide chunks of the listed ids.
Math in float32 (float64 for float64 logits, which run in the interpreter only); logits are loaded
and the gradient stored in the logits' dtype.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tskd_fast.ops.common import with_unit_class_stride
from tskd_fast.ops.fused_linear_kd import FUSED_LINEAR_KD_ROWS
from tskd_fast.ops.library import define_triton
from tskd_fast.ops.triton._launch import (
    check_device_runs_triton,
    quiet_interpreter,
    raise_if_flagged,
    runs_in_interpreter,
    value_flag,
)
from tskd_fast.ops.triton._rowmath import nan_as_inf, rescale, rescale_unit, shift

FORWARD_KL, REVERSE_KL, JSD, SKEW_FORWARD_KL, SKEW_REVERSE_KL, TVD = range(6)
KA_NONE, KA_PS, KA_LSR = 0, 1, 2

# Widest column chunk and the warps of a program: 8 elements per thread, which every divergence
# and knowledge-adjustment variant compiles for sm_90 without spilling registers (2048 columns
# spill on the JSD and TVD variants with knowledge adjustment; tests/test_fused_linear_kd_triton.py
# checks).
MAX_BLOCK_V = 1024
NUM_WARPS = 4
# Widest chunk of listed top-k ids.
MAX_BLOCK_K = 1024


@triton.jit
def _term(p, log_p, q, log_q, mp, mq, DIV: tl.constexpr):
    """(loss share, u = q dD/dq) of one column or bucket: flkd_term of fused_linear_kd_math.h.
    p == 0 or q == 0 contributes 0 where 0 log 0 = 0 says so."""
    if DIV == 0:  # KL(p || q)
        loss = tl.where(p > 0.0, p * (log_p - log_q), 0.0)
        u = -p
    elif DIV == 1:  # KL(q || p)
        loss = tl.where(q > 0.0, q * (log_q - log_p), 0.0)
        u = loss
    elif DIV == 5:  # 1/2 |p - q|
        loss = 0.5 * tl.abs(p - q)
        u = tl.where(q > p, 0.5 * q, tl.where(p > q, -0.5 * q, 0.0))
    else:  # the mixture divergences, m = mp p + mq q
        m = mp * p + mq * q
        has_m = m > 0.0
        m_safe = tl.where(has_m, m, 1.0)
        log_m = tl.log(m_safe)
        p_part = tl.where(p > 0.0, p * (log_p - log_m), 0.0)
        q_part = tl.where(q > 0.0, q * (log_q - log_m), 0.0)
        q_over_m = tl.where(has_m, q / m_safe, 0.0)
        if DIV == 2:  # beta KL(p || m) + (1 - beta) KL(q || m)
            loss = mp * p_part + mq * q_part
            u = mq * q_part
        elif DIV == 3:  # KL(p || m)
            loss = p_part
            u = -mq * p * q_over_m
        else:  # KL(q || m), m = (1 - beta) p + beta q
            loss = q_part
            u = q_part - mq * q * q_over_m
    return loss, u


@triton.jit
def _column_logs(
    z, v, cols, ok, mz, mv, s_logz, t_logz, inv_tau, label, arg, swapped, smoothed, v_y, log_on, log_off, KA
):
    """log p and log q of a chunk of a teacher row (-inf past the row's end): the probability
    shift swaps the teacher's values at its argmax (the maximum) and at the label; label-smoothed
    rows take their target's on and off values."""
    log_q = tl.where(ok, (z - mz) * inv_tau - s_logz, float("-inf"))
    vv = v
    if KA == 1:
        vv = tl.where(swapped & (cols == label), mv, tl.where(swapped & (cols == arg), v_y, v))
    log_p = (vv - mv) * inv_tau - t_logz
    if KA == 2:
        log_p = tl.where(smoothed, tl.where(cols == label, log_on, log_off), log_p)
    log_p = tl.where(ok, log_p, float("-inf"))
    return log_p, log_q


@triton.jit
def _column_sums(
    s_row,
    t_row,
    n_cols,
    mz,
    mv,
    s_logz,
    t_logz,
    inv_tau,
    label,
    arg,
    swapped,
    smoothed,
    v_y,
    log_on,
    log_off,
    mp,
    mq,
    DIV: tl.constexpr,
    KA: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Pass B: sum_k of the column terms (D, and sum_k u_k)."""
    loss_sum = tl.zeros([], ACC)
    u_sum = tl.zeros([], ACC)
    for c0 in range(0, n_cols, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        ok = cols < n_cols
        z = tl.load(s_row + cols, mask=ok, other=float("-inf")).to(ACC)
        v = tl.load(t_row + cols, mask=ok, other=float("-inf")).to(ACC)
        log_p, log_q = _column_logs(
            z,
            v,
            cols,
            ok,
            mz,
            mv,
            s_logz,
            t_logz,
            inv_tau,
            label,
            arg,
            swapped,
            smoothed,
            v_y,
            log_on,
            log_off,
            KA,
        )
        loss, u = _term(tl.exp(log_p), log_p, tl.exp(log_q), log_q, mp, mq, DIV)
        loss_sum += tl.sum(loss, axis=0)
        u_sum += tl.sum(u, axis=0)
    return loss_sum, u_sum


@triton.jit
def _teacher_row(
    s_row,
    t_row,
    loss_ptr,
    n_cols,
    label,
    label_used,
    tau,
    mp,
    mq,
    log_on,
    log_off,
    ce_weight,
    grad_scale,
    DIV: tl.constexpr,
    KA: tl.constexpr,
    SCALE_TAU2: tl.constexpr,
    HAS_CE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """A row with teacher logits whose label is not ignored."""
    inv_tau = 1.0 / tau
    # Pass A. Sums are kept relative to the finite shifts of the running maxima (shift: 0 while a
    # maximum is +-inf), so that -inf - -inf never occurs; cross is relative to the teacher's
    # (forward KL) or the student's (reverse KL) maximum, as FlkdStats.cross.
    mz = tl.full([], float("-inf"), ACC)
    mv = tl.full([], float("-inf"), ACC)
    sz = tl.zeros([], ACC)
    sv = tl.zeros([], ACC)
    sce = tl.zeros([], ACC)
    cross = tl.zeros([], ACC)
    arg = tl.zeros([], tl.int32)
    for c0 in range(0, n_cols, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        ok = cols < n_cols
        z = tl.load(s_row + cols, mask=ok, other=float("-inf")).to(ACC)
        v = tl.load(t_row + cols, mask=ok, other=float("-inf")).to(ACC)
        mz_new = tl.maximum(mz, tl.max(nan_as_inf(z), axis=0))
        chunk_mv = tl.max(nan_as_inf(v), axis=0)
        mv_new = tl.maximum(mv, chunk_mv)
        if KA != 0:
            # Strictly greater: an equal maximum in a later chunk keeps the earlier column.
            first = tl.min(tl.where(v == chunk_mv, cols, 2147483647), axis=0)
            arg = tl.where(chunk_mv > mv, first, arg)
        zs = shift(mz_new)
        vs = shift(mv_new)
        fz = rescale(mz, mz_new, inv_tau)
        fv = rescale(mv, mv_new, inv_tau)
        eb = tl.exp((z - zs) * inv_tau)
        ea = tl.exp((v - vs) * inv_tau)
        sz = fz * sz + tl.sum(eb, axis=0)
        sv = fv * sv + tl.sum(ea, axis=0)
        if HAS_CE:
            sce = rescale_unit(mz, mz_new) * sce + tl.sum(tl.exp(z - zs), axis=0)
        # A carried sum whose weights all underflowed is 0, not 0 * inf; so is a column of zero
        # weight, whatever the other side's logit.
        if DIV == 0:
            cross = tl.where(fv == 0.0, 0.0, fv * cross) + tl.sum(
                tl.where(ea == 0.0, 0.0, ea * (v - z)), axis=0
            )
        if DIV == 1:
            cross = tl.where(fz == 0.0, 0.0, fz * cross) + tl.sum(
                tl.where(eb == 0.0, 0.0, eb * (z - v)), axis=0
            )
        mz = mz_new
        mv = mv_new

    # NaN or +inf anywhere, or a row of only -inf, makes the row NaN.
    bad = ~(tl.abs(mz) < float("inf")) | ~(tl.abs(mv) < float("inf"))
    s_logz = tl.log(sz)
    t_logz = tl.log(sv)
    if HAS_CE:
        ce_logz = tl.log(sce)
    else:
        ce_logz = s_logz
    fine = ~bad
    use_label = label_used & fine
    y = tl.where(use_label, label, 0)
    z_y = tl.load(s_row + y, mask=use_label, other=0.0).to(ACC)
    v_y = tl.load(t_row + y, mask=use_label, other=0.0).to(ACC)
    arg64 = arg.to(tl.int64)
    differs = use_label & (arg64 != label)
    no = differs != differs  # a false scalar
    if KA == 1:
        swapped = differs
        smoothed = no
    elif KA == 2:
        swapped = no
        smoothed = differs
    else:
        swapped = no
        smoothed = no
    z_j = tl.load(s_row + tl.where(swapped, arg64, 0), mask=swapped, other=0.0).to(ACC)

    if DIV >= 2:
        d, g_bar = _column_sums(
            s_row,
            t_row,
            n_cols,
            mz,
            mv,
            s_logz,
            t_logz,
            inv_tau,
            label,
            arg64,
            swapped,
            smoothed,
            v_y,
            log_on,
            log_off,
            mp,
            mq,
            DIV,
            KA,
            ACC,
            BLOCK_V,
        )
    else:
        # Forward and reverse KL from pass A (flkd_online_divergence); the swap changes two
        # columns of the cross sum.
        if DIV == 0:
            ea_y = tl.exp((v_y - mv) * inv_tau)
            c = cross + tl.where(swapped, (1.0 - ea_y) * (z_j - z_y), 0.0)
            d = c * inv_tau / sv + (mz - mv) * inv_tau - t_logz + s_logz
            g_bar = tl.full([], -1.0, ACC)
        else:
            eb_j = tl.exp((z_j - mz) * inv_tau)
            eb_y = tl.exp((z_y - mz) * inv_tau)
            c = cross + tl.where(swapped, (eb_j - eb_y) * (mv - v_y), 0.0)
            d = c * inv_tau / sz + (mv - mz) * inv_tau - s_logz + t_logz
            g_bar = d
        if KA == 2:
            if smoothed:
                d, u_sum = _column_sums(
                    s_row,
                    t_row,
                    n_cols,
                    mz,
                    mv,
                    s_logz,
                    t_logz,
                    inv_tau,
                    label,
                    arg64,
                    swapped,
                    smoothed,
                    v_y,
                    log_on,
                    log_off,
                    mp,
                    mq,
                    DIV,
                    KA,
                    ACC,
                    BLOCK_V,
                )
                if DIV == 1:
                    g_bar = u_sum

    if SCALE_TAU2:
        scale = tau * tau
    else:
        scale = tau * 0.0 + 1.0
    loss = scale * d
    if HAS_CE:
        loss += tl.where(label_used, ce_weight * (ce_logz - (z_y - mz)), 0.0)
    tl.store(loss_ptr, tl.where(bad, float("nan"), loss))

    if WRITE_GRAD:
        kd = grad_scale * scale * inv_tau
        ce_c = tl.where(label_used, grad_scale * ce_weight, 0.0)
        # The label's and argmax's logits above are read before any warp overwrites them.
        tl.debug_barrier()
        for c0 in range(0, n_cols, BLOCK_V):
            cols = c0 + tl.arange(0, BLOCK_V)
            ok = cols < n_cols
            z = tl.load(s_row + cols, mask=ok, other=float("-inf")).to(ACC)
            v = tl.load(t_row + cols, mask=ok, other=float("-inf")).to(ACC)
            log_p, log_q = _column_logs(
                z,
                v,
                cols,
                ok,
                mz,
                mv,
                s_logz,
                t_logz,
                inv_tau,
                label,
                arg64,
                swapped,
                smoothed,
                v_y,
                log_on,
                log_off,
                KA,
            )
            q = tl.exp(log_q)
            _, u = _term(tl.exp(log_p), log_p, q, log_q, mp, mq, DIV)
            g = kd * (u - q * g_bar)
            if HAS_CE:
                g += ce_c * tl.exp(z - mz - ce_logz) - tl.where(cols == label, ce_c, 0.0)
            g = tl.where(bad, float("nan"), g)
            tl.store(s_row + cols, g.to(s_row.dtype.element_ty), mask=ok)


@triton.jit
def _topk_row(
    s_row,
    ids_row,
    lp_row,
    scratch_row,
    loss_ptr,
    flag_ptr,
    n_cols,
    n_k,
    label,
    label_used,
    tau,
    mp,
    mq,
    ce_weight,
    grad_scale,
    DIV: tl.constexpr,
    SCALE_TAU2: tl.constexpr,
    HAS_CE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """A row of a top-k teacher whose label is not ignored (the top-k part of
    fused_linear_kd_math.h)."""
    inv_tau = 1.0 / tau
    y = tl.where(label_used, label, 0)
    z_y = tl.load(s_row + y, mask=label_used, other=0.0).to(ACC)
    # The listed student logits, saved; ids out of range clear the error flag and are skipped.
    for k0 in range(0, n_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kok = ks < n_k
        ids = tl.load(ids_row + ks, mask=kok, other=0)
        id_ok = (ids >= 0) & (ids < n_cols)
        tl.store(flag_ptr + ks * 0, tl.zeros([BLOCK_K], tl.int32), mask=kok & ~id_ok)
        z_id = tl.load(s_row + ids, mask=kok & id_ok, other=float("-inf")).to(ACC)
        tl.store(scratch_row + ks, z_id, mask=kok)
    tl.debug_barrier()  # every listed logit is read before it is masked
    for k0 in range(0, n_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kok = ks < n_k
        ids = tl.load(ids_row + ks, mask=kok, other=0)
        id_ok = (ids >= 0) & (ids < n_cols)
        minus_inf = tl.full([BLOCK_K], float("-inf"), ACC)
        tl.store(s_row + ids, minus_inf.to(s_row.dtype.element_ty), mask=kok & id_ok)
    tl.debug_barrier()

    # Pass A over the masked row: the tail's statistics (sums relative to shift(mz)).
    mz = tl.full([], float("-inf"), ACC)
    sz = tl.zeros([], ACC)
    sce = tl.zeros([], ACC)
    for c0 in range(0, n_cols, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        z = tl.load(s_row + cols, mask=cols < n_cols, other=float("-inf")).to(ACC)
        mz_new = tl.maximum(mz, tl.max(nan_as_inf(z), axis=0))
        zs = shift(mz_new)
        sz = rescale(mz, mz_new, inv_tau) * sz + tl.sum(tl.exp((z - zs) * inv_tau), axis=0)
        if HAS_CE:
            sce = rescale_unit(mz, mz_new) * sce + tl.sum(tl.exp(z - zs), axis=0)
        mz = mz_new
    # The listed logits folded in (flkd_topk_student): the maximum over all V columns, then the
    # tail's sum rebased on it and the listed terms added.
    s_max = mz
    for k0 in range(0, n_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        z_id = tl.load(scratch_row + ks, mask=ks < n_k, other=float("-inf"))
        s_max = tl.maximum(s_max, tl.max(nan_as_inf(z_id), axis=0))
    ss = shift(s_max)
    tail_sum = rescale(mz, ss, inv_tau) * sz
    s_sum = tail_sum
    ce_sum = rescale_unit(mz, ss) * sce
    for k0 in range(0, n_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        z_id = tl.load(scratch_row + ks, mask=ks < n_k, other=float("-inf"))
        s_sum += tl.sum(tl.exp((z_id - ss) * inv_tau), axis=0)
        if HAS_CE:
            ce_sum += tl.sum(tl.exp(z_id - ss), axis=0)
    s_logz = tl.log(s_sum)
    if HAS_CE:
        ce_logz = tl.log(ce_sum)
    else:
        ce_logz = s_logz

    # The teacher's K + 1 buckets at tau (flkd_topk_teacher): the tail's mass at temperature 1
    # spread over the V - K ids not listed, the whole raised to 1 / tau and renormalised.
    listed = tl.zeros([], ACC)
    l_max = tl.full([], float("-inf"), ACC)
    for k0 in range(0, n_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        lp = tl.load(lp_row + ks, mask=ks < n_k, other=float("-inf")).to(ACC)
        listed += tl.sum(tl.exp(lp), axis=0)
        l_max = tl.maximum(l_max, tl.max(nan_as_inf(lp * inv_tau), axis=0))
    log_tail1 = tl.log(tl.where(listed < 1.0, 1.0 - listed, 0.0))
    rest = n_cols - n_k
    log_rest = tl.log(tl.maximum(rest, 1).to(ACC))
    has_tail = (rest > 0) & (log_tail1 > float("-inf"))
    l_tail = tl.where(has_tail, log_rest + (log_tail1 - log_rest) * inv_tau, float("-inf"))
    mx = tl.maximum(l_max, l_tail)
    t_sum = tl.where(has_tail, tl.exp(l_tail - mx), 0.0)
    for k0 in range(0, n_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        lp = tl.load(lp_row + ks, mask=ks < n_k, other=float("-inf")).to(ACC)
        t_sum += tl.sum(tl.exp(lp * inv_tau - mx), axis=0)
    t_logz = mx + tl.log(t_sum)
    log_p_tail = tl.where(has_tail, l_tail - t_logz, float("-inf"))
    bad = ~(tl.abs(s_max) < float("inf")) | ~(tl.abs(t_logz) < float("inf"))

    # The divergence over the buckets.
    loss_sum = tl.zeros([], ACC)
    u_sum = tl.zeros([], ACC)
    for k0 in range(0, n_k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kok = ks < n_k
        z_id = tl.load(scratch_row + ks, mask=kok, other=float("-inf"))
        lp = tl.load(lp_row + ks, mask=kok, other=float("-inf")).to(ACC)
        log_p = tl.where(kok, lp * inv_tau - t_logz, float("-inf"))
        log_q = tl.where(kok, (z_id - ss) * inv_tau - s_logz, float("-inf"))
        loss, u = _term(tl.exp(log_p), log_p, tl.exp(log_q), log_q, mp, mq, DIV)
        loss_sum += tl.sum(loss, axis=0)
        u_sum += tl.sum(u, axis=0)
    log_q_tail = tl.where(tail_sum > 0.0, tl.log(tail_sum) - s_logz, float("-inf"))
    q_tail = tl.exp(log_q_tail)
    tail_loss, tail_u = _term(tl.exp(log_p_tail), log_p_tail, q_tail, log_q_tail, mp, mq, DIV)
    g_tail = tl.where(q_tail > 0.0, tail_u / tl.where(q_tail > 0.0, q_tail, 1.0), 0.0)
    d = loss_sum + tail_loss
    if DIV == 0:
        g_bar = tl.full([], -1.0, ACC)
    else:
        g_bar = u_sum + tail_u

    if SCALE_TAU2:
        scale = tau * tau
    else:
        scale = tau * 0.0 + 1.0
    loss = scale * d
    if HAS_CE:
        loss += tl.where(label_used, ce_weight * (ce_logz - (z_y - ss)), 0.0)
    tl.store(loss_ptr, tl.where(bad, float("nan"), loss))

    if WRITE_GRAD:
        kd = grad_scale * scale * inv_tau
        ce_c = tl.where(label_used, grad_scale * ce_weight, 0.0)
        tail_coef = kd * (g_tail - g_bar)
        # Every column as a tail column (the listed ones hold -inf: 0), then the listed ids, which
        # overwrite the label's column when it is listed.
        for c0 in range(0, n_cols, BLOCK_V):
            cols = c0 + tl.arange(0, BLOCK_V)
            ok = cols < n_cols
            z = tl.load(s_row + cols, mask=ok, other=float("-inf")).to(ACC)
            g = tail_coef * tl.exp((z - ss) * inv_tau - s_logz)
            if HAS_CE:
                g += ce_c * tl.exp(z - ss - ce_logz) - tl.where(cols == label, ce_c, 0.0)
            g = tl.where(bad, float("nan"), g)
            tl.store(s_row + cols, g.to(s_row.dtype.element_ty), mask=ok)
        tl.debug_barrier()  # the listed columns' zeros before their gradients
        for k0 in range(0, n_k, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kok = ks < n_k
            ids = tl.load(ids_row + ks, mask=kok, other=0)
            id_ok = (ids >= 0) & (ids < n_cols)
            z_id = tl.load(scratch_row + ks, mask=kok, other=float("-inf"))
            lp = tl.load(lp_row + ks, mask=kok, other=float("-inf")).to(ACC)
            log_p = lp * inv_tau - t_logz
            log_q = (z_id - ss) * inv_tau - s_logz
            q = tl.exp(log_q)
            _, u = _term(tl.exp(log_p), log_p, q, log_q, mp, mq, DIV)
            g = kd * (u - q * g_bar)
            if HAS_CE:
                g += ce_c * tl.exp(z_id - ss - ce_logz) - tl.where(ids == label, ce_c, 0.0)
            g = tl.where(bad, float("nan"), g)
            tl.store(s_row + ids, g.to(s_row.dtype.element_ty), mask=kok & id_ok)


# n_cols and n_k never become constants (Triton specialises integer arguments equal to 1).
@triton.jit(do_not_specialize=["n_cols", "n_k"])
def _flkd_rows_kernel(
    s_ptr,
    t_ptr,
    ids_ptr,
    lp_ptr,
    scratch_ptr,
    y_ptr,
    tau_ptr,
    params_ptr,
    loss_ptr,
    flag_ptr,
    n_cols,
    n_k,
    s_row_stride,
    t_row_stride,
    ignore_index,
    mp_arg,
    mq_arg,
    log_on_arg,
    log_off_arg,
    ce_weight_arg,
    grad_scale_arg,
    DIV: tl.constexpr,
    KA: tl.constexpr,
    SCALE_TAU2: tl.constexpr,
    HAS_TARGET: tl.constexpr,
    HAS_CE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    TOPK: tl.constexpr,
    PARAMS_IN_MEMORY: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Float scalar arguments are float32 in Triton; float64 runs read theirs from memory so that
    # they keep double precision.
    if PARAMS_IN_MEMORY:
        mp = tl.load(params_ptr + 0)
        mq = tl.load(params_ptr + 1)
        log_on = tl.load(params_ptr + 2)
        log_off = tl.load(params_ptr + 3)
        ce_weight = tl.load(params_ptr + 4)
        grad_scale = tl.load(params_ptr + 5)
    else:
        mp = mp_arg
        mq = mq_arg
        log_on = log_on_arg
        log_off = log_off_arg
        ce_weight = ce_weight_arg
        grad_scale = grad_scale_arg
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_row_stride
    tau = tl.load(tau_ptr + row).to(ACC)
    # The value checks that need the data, folded in: a temperature that is not finite and > 0
    # (NaN fails both comparisons) or a label out of range clears the launch's error flag.
    invalid = ~((tau > 0.0) & (tau < float("inf")))
    if HAS_TARGET:
        label = tl.load(y_ptr + row)
        in_range = (label >= 0) & (label < n_cols)
        invalid = invalid | ((label != ignore_index) & ~in_range)
        ignored = label == ignore_index
        # A bad label is treated as ignored until the error is raised: every access stays in
        # bounds meanwhile.
        label_used = ~ignored & in_range
        skip = ~label_used
    else:
        label = row * 0 - 1  # no label: matches no column
        label_used = label >= 0
        skip = label_used
    tl.store(flag_ptr, 0, mask=invalid)
    tau = tl.where(invalid, 1.0, tau)

    if skip:
        tl.store(loss_ptr + row, 0.0)
        if WRITE_GRAD:
            for c0 in range(0, n_cols, BLOCK_V):
                cols = c0 + tl.arange(0, BLOCK_V)
                zero = tl.zeros([BLOCK_V], tl.float32)
                tl.store(s_row + cols, zero.to(s_ptr.dtype.element_ty), mask=cols < n_cols)
    else:
        if TOPK:
            _topk_row(
                s_row,
                ids_ptr + row * n_k,
                lp_ptr + row * n_k,
                scratch_ptr + row * n_k,
                loss_ptr + row,
                flag_ptr,
                n_cols,
                n_k,
                label,
                label_used,
                tau,
                mp,
                mq,
                ce_weight,
                grad_scale,
                DIV,
                SCALE_TAU2,
                HAS_CE,
                WRITE_GRAD,
                ACC,
                BLOCK_V,
                BLOCK_K,
            )
        else:
            _teacher_row(
                s_row,
                t_ptr + row * t_row_stride,
                loss_ptr + row,
                n_cols,
                label,
                label_used,
                tau,
                mp,
                mq,
                log_on,
                log_off,
                ce_weight,
                grad_scale,
                DIV,
                KA,
                SCALE_TAU2,
                HAS_CE,
                WRITE_GRAD,
                ACC,
                BLOCK_V,
            )


# Whether the kernels run in the Triton interpreter (which also runs them on CPU tensors).
INTERPRETED = runs_in_interpreter(_flkd_rows_kernel)


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _mix(divergence: int, beta: float) -> tuple[float, float]:
    """(mp, mq) of the mixture m = mp p + mq q (flkd_mix)."""
    if divergence == SKEW_REVERSE_KL:
        return 1.0 - beta, beta
    return beta, 1.0 - beta


def _smoothed_logs(lsr_p: float, classes: int) -> tuple[float, float]:
    """log of the label-smoothing target's on and off values, in double precision."""
    off = (1.0 - lsr_p) / (classes - 1) if classes > 1 else 0.0
    return math.log(lsr_p), (math.log(off) if off > 0 else float("-inf"))


def launch_fused_linear_kd_rows(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    topk_ids: torch.Tensor | None,
    topk_logprobs: torch.Tensor | None,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    divergence: int,
    beta: float,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    compute_grad: bool,
    grad_scale: float,
    flag: torch.Tensor,
    block_v: int | None = None,
    block_k: int | None = None,
) -> torch.Tensor:
    """Run the kernel on checked inputs: student (R, V) with unit column stride (overwritten by
    the gradient when compute_grad; the scratch of top-k rows in any case), teacher (R, V) with
    unit column stride or None, topk_ids (R, K) int64 and topk_logprobs (R, K) contiguous or None,
    target (R,) and temperature (R,) contiguous. Returns the row losses (R,) in the opmath dtype.
    The kernel clears `flag` (a (1,) int32 tensor holding 1) when a label, a temperature or a top-k
    id is invalid. block_v and block_k (powers of two) override the chunk widths (tests use them
    to walk short rows in several chunks). Call it on the inputs' device."""
    rows, classes = student.shape
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    row_loss = torch.empty((rows,), dtype=acc, device=student.device)
    if rows == 0:
        return row_loss
    has_topk = topk_ids is not None
    n_k = topk_ids.shape[1] if has_topk else 0
    scratch = torch.empty((rows, n_k), dtype=acc, device=student.device) if has_topk else row_loss
    mp, mq = _mix(divergence, beta)
    log_on, log_off = _smoothed_logs(lsr_p, classes)
    params_in_memory = acc == torch.float64
    params = (
        torch.tensor([mp, mq, log_on, log_off, ce_weight, grad_scale], dtype=acc, device=student.device)
        if params_in_memory
        else row_loss  # never read
    )
    has_target = target is not None
    bv = block_v or min(max(_next_power_of_two(classes), 16), MAX_BLOCK_V)
    bk = block_k or min(max(_next_power_of_two(max(n_k, 1)), 16), MAX_BLOCK_K)
    with quiet_interpreter(INTERPRETED):
        _flkd_rows_kernel[(rows,)](
            student,
            teacher if teacher is not None else student,
            topk_ids if has_topk else temperature,
            topk_logprobs if has_topk else temperature,
            scratch,
            target if has_target else temperature,
            temperature,
            params,
            row_loss,
            flag,
            classes,
            n_k,
            student.stride(0),
            teacher.stride(0) if teacher is not None else 0,
            ignore_index,
            mp,
            mq,
            log_on,
            log_off,
            ce_weight,
            grad_scale,
            DIV=int(divergence),
            KA=int(ka) if has_target and not has_topk else KA_NONE,
            SCALE_TAU2=bool(scale_tau2),
            HAS_TARGET=has_target,
            HAS_CE=has_target and ce_weight != 0.0,
            WRITE_GRAD=bool(compute_grad),
            TOPK=has_topk,
            PARAMS_IN_MEMORY=params_in_memory,
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            BLOCK_V=bv,
            BLOCK_K=bk,
            num_warps=NUM_WARPS,
        )
    return row_loss


# ---- the op ------------------------------------------------------------------------------------

OP_NAME = f"tskd_fast::{FUSED_LINEAR_KD_ROWS.triton_name}"
_WHAT = (
    "a target label or a top-k id is out of range (labels in [0, classes) or ignore_index, ids in "
    "[0, classes)), a row of topk_ids lists an id twice, or a temperature is not finite and > 0"
)


def _assert_ids_on_device(topk_ids: torch.Tensor, classes: int) -> None:
    """Every top-k id in [0, classes) and none twice in a row (the CPU op's check of
    check_fused_linear_kd_rows_values), asserted on the device: nothing waits for the answer."""
    bad = ((topk_ids < 0) | (topk_ids >= classes)).any()
    if topk_ids.shape[1] > 1:
        ordered = topk_ids.sort(dim=1).values
        bad = bad | (ordered[:, 1:] == ordered[:, :-1]).any()
    torch._assert_async(~bad, f"{OP_NAME}: {_WHAT}")


def fused_linear_kd_rows_triton_impl(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    topk_ids: torch.Tensor | None,
    topk_logprobs: torch.Tensor | None,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    divergence: int,
    beta: float,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    compute_grad: bool,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """The op on inputs its spec checked, on their device (tskd_fast.ops.library)."""
    args = (
        student,
        teacher,
        topk_ids,
        topk_logprobs,
        target,
        temperature,
        divergence,
        beta,
        ka,
        lsr_p,
        scale_tau2,
        ce_weight,
        ignore_index,
        compute_grad,
        grad_scale,
    )
    check_device_runs_triton(student, INTERPRETED)
    if student.requires_grad and student.is_leaf:
        # As ATen (and the C++ op) refuse it: the gradient would overwrite a tensor autograd owns.
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
    if teacher is not None:
        teacher = with_unit_class_stride(teacher)
    if topk_ids is not None:
        topk_ids = topk_ids.contiguous()
        topk_logprobs = topk_logprobs.contiguous()
        # Repeated ids are no value a kernel can flag: on the host (CPU, where reading is free)
        # the spec's value check runs first; on a GPU the device asserts.
        if student.device.type == "cpu":
            FUSED_LINEAR_KD_ROWS.check_values(*args)
        else:
            _assert_ids_on_device(topk_ids, student.shape[1])
    if target is not None:
        target = target.contiguous()
    temperature = temperature.contiguous()
    flag = value_flag(student.device)
    row_loss = launch_fused_linear_kd_rows(
        student,
        teacher,
        topk_ids,
        topk_logprobs,
        target,
        temperature,
        divergence,
        beta,
        ka,
        lsr_p,
        scale_tau2,
        ce_weight,
        ignore_index,
        compute_grad,
        grad_scale,
        flag,
    )
    raise_if_flagged(flag, OP_NAME, _WHAT, lambda: FUSED_LINEAR_KD_ROWS.check_values(*args))
    return row_loss


#: The op overload, called like torch.ops.tskd_fast.fused_linear_kd_rows.default.
fused_linear_kd_rows_triton = define_triton(FUSED_LINEAR_KD_ROWS, fused_linear_kd_rows_triton_impl)
