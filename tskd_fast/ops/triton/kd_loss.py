"""The fused KD loss as a Triton kernel: the op tskd_fast::kd_loss_triton.

Defined from the spec of tskd_fast.ops.kd_loss (schema, check, fake kernel, autograd formula), the
same as the C++ op tskd_fast::kd_loss (csrc/cpu/kd_loss_kernel.h,
csrc/include/tskd_fast/kd_loss_math.h).

Kernel layout (launch shapes in _config.row_block_config):
  * rows up to 4096 columns: a program owns a [ROWS, BLOCK_C] tile of whole rows (several rows
    below 1024 columns, one from there on), reads the student and teacher logits once and writes
    loss and gradient from registers;
  * longer rows: a program owns one row and walks it in 4096-wide chunks twice: an online pass
    (running maxima with rescaled sums, as in online softmax) gathers every sum the loss needs,
    and a second pass recomputes the exponentials to write the gradient: each logit is read twice
    (a separate max pass would make it three times) and each gradient element written once.
Math in float32 (float64 for float64 logits); logits are loaded and the gradient stored in the
logits' dtype. Rows with stride != C are read in place; column-strided logits are copied first.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tskd_fast.ops.common import opmath_dtype, with_unit_class_stride
from tskd_fast.ops.kd_loss import KD_LOSS, REDUCE_MEAN, REDUCE_NONE, REDUCE_SUM
from tskd_fast.ops.library import define_triton
from tskd_fast.ops.triton._config import RowBlockConfig, row_block_config
from tskd_fast.ops.triton._launch import (
    check_device_runs_triton,
    quiet_interpreter,
    raise_if_flagged,
    runs_in_interpreter,
    value_flag,
)
from tskd_fast.ops.triton._rowmath import first_max_index, nan_as_inf, rescale, rescale_unit, shift

OP_NAME = f"tskd_fast::{KD_LOSS.triton_name}"

KA_NONE, KA_PS, KA_LSR = 0, 1, 2


@triton.jit
def _kd_update(
    z,
    v,
    cols,
    ok,
    c0,
    mz,
    mv,
    sz,
    sv,
    cross,
    arg,
    sb,
    sce,
    inv_tau,
    KA: tl.constexpr,
    HAS_CE: tl.constexpr,
):
    """Fold one [ROWS, BLOCK_C] chunk (masked lanes hold -inf) into the running row sums.

    Sums are kept relative to the running maxima mz (student) and mv (teacher), through their
    finite shifts: sz = sum exp(b), sv = sum exp(a), cross = sum exp(a) (a - b) (0 where exp(a) is
    0), sb = sum b, sce = sum exp(z - shift(mz)); b = (z - shift(mz)) / tau, a = (v - shift(mv)) / tau.
    arg is the first column holding the teacher's maximum.
    """
    mz_new = tl.maximum(mz, tl.max(nan_as_inf(z), axis=1))
    chunk_mv = tl.max(nan_as_inf(v), axis=1)
    mv_new = tl.maximum(mv, chunk_mv)
    if KA != 0:
        # Strictly greater: an equal maximum in a later chunk keeps the earlier index (torch.argmax).
        arg = tl.where(chunk_mv > mv, first_max_index(v, chunk_mv, cols), arg)
    zs_old = shift(mz)
    zs = shift(mz_new)
    vs_old = shift(mv)
    vs = shift(mv_new)
    fz = rescale(mz, mz_new, inv_tau)
    fv = rescale(mv, mv_new, inv_tau)
    it = inv_tau[:, None]
    b = (z - zs[:, None]) * it
    a = (v - vs[:, None]) * it
    eb = tl.exp(b)
    ea = tl.exp(a)
    # Moving the shifts moves every earlier a_k - b_k by the same amount; a carried sum whose
    # weights all underflowed is 0, not 0 * inf.
    moved = ((vs_old - vs) - (zs_old - zs)) * inv_tau
    carried = tl.where(fv == 0.0, 0.0, fv * (cross + sv * moved))
    cross = carried + tl.sum(tl.where(ea == 0.0, 0.0, ea * (a - b)), axis=1)
    sz = fz * sz + tl.sum(eb, axis=1)
    sv = fv * sv + tl.sum(ea, axis=1)
    if KA == 2:
        # c0 columns were summed before this chunk, each relative to the old shift.
        sb = sb + c0 * ((zs_old - zs) * inv_tau) + tl.sum(tl.where(ok, b, 0.0), axis=1)
    if HAS_CE:
        sce = rescale_unit(mz, mz_new) * sce + tl.sum(tl.exp(z - zs[:, None]), axis=1)
    return mz_new, mv_new, sz, sv, cross, arg, sb, sce


@triton.jit
def _kd_grad_tile(
    z,
    v,
    cols,
    zs,
    vs,
    inv_tau,
    label,
    arg,
    swapped,
    ea_label,
    c_student,
    c_teacher,
    c_smooth,
    c_ce,
    c_ce_label,
    lsr_on,
    lsr_off,
    bad,
    KA: tl.constexpr,
    HAS_CE: tl.constexpr,
):
    """dloss/dz on one tile: c_student exp(b) - c_teacher exp(a') - c_smooth q + c_ce exp(z - max z)
    - c_ce_label [k == y], a' the (possibly swapped) teacher; NaN on bad rows. `label` is -1 on
    rows without a usable label."""
    it = inv_tau[:, None]
    is_label = cols[None, :] == label[:, None]
    g = c_student[:, None] * tl.exp((z - zs[:, None]) * it)
    ea = tl.exp((v - vs[:, None]) * it)
    if KA == 1:
        # The swap puts the teacher maximum (exp(0) = 1) at the label and the label's value at
        # the argmax.
        sw = swapped[:, None]
        is_arg = cols[None, :] == arg[:, None]
        ea = tl.where(sw & is_label, 1.0, tl.where(sw & is_arg, ea_label[:, None], ea))
    g = g - c_teacher[:, None] * ea
    if KA == 2:
        g = g - c_smooth[:, None] * tl.where(is_label, lsr_on, lsr_off)
    if HAS_CE:
        g = g + c_ce[:, None] * tl.exp(z - zs[:, None])
        g = g - tl.where(is_label, c_ce_label[:, None], 0.0)
    return tl.where(bad[:, None], float("nan"), g)


@triton.jit
def _kd_loss_kernel(
    z_ptr,
    v_ptr,
    y_ptr,
    tau_ptr,
    params_ptr,
    loss_ptr,
    grad_ptr,
    flag_ptr,
    n_rows,
    n_cols,
    z_row_stride,
    v_row_stride,
    grad_row_stride,
    ignore_index,
    lsr_on_arg,
    lsr_off_arg,
    lsr_neg_entropy_arg,
    ce_weight_arg,
    grad_scale_arg,
    KA: tl.constexpr,
    SCALE_TAU2: tl.constexpr,
    HAS_TARGET: tl.constexpr,
    HAS_CE: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    PARAMS_IN_MEMORY: tl.constexpr,
    ACC: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    SINGLE_CHUNK: tl.constexpr,
):
    # Float scalar arguments are float32 in Triton; float64 runs read theirs from memory so that
    # they keep double precision.
    if PARAMS_IN_MEMORY:
        lsr_on = tl.load(params_ptr + 0)
        lsr_off = tl.load(params_ptr + 1)
        lsr_neg_entropy = tl.load(params_ptr + 2)
        ce_weight = tl.load(params_ptr + 3)
        grad_scale = tl.load(params_ptr + 4)
    else:
        lsr_on = lsr_on_arg
        lsr_off = lsr_off_arg
        lsr_neg_entropy = lsr_neg_entropy_arg
        ce_weight = ce_weight_arg
        grad_scale = grad_scale_arg

    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    z_row = z_ptr + rows64 * z_row_stride
    v_row = v_ptr + rows64 * v_row_stride
    tau = tl.load(tau_ptr + rows, mask=row_ok, other=1.0).to(ACC)
    inv_tau = 1.0 / tau
    # The value checks that need the data, folded in: a temperature that is not finite and > 0
    # (NaN fails both comparisons) or a label out of range clears the launch's error flag, which
    # the host reads (CPU) or asserts on asynchronously (CUDA).
    invalid = row_ok & ~((tau > 0.0) & (tau < float("inf")))
    if HAS_TARGET:
        label = tl.load(y_ptr + rows, mask=row_ok, other=ignore_index)
        in_range = (label >= 0) & (label < n_cols)
        invalid = invalid | (row_ok & (label != ignore_index) & ~in_range)
        # Bad labels are treated as ignored until the error is raised, so that every access
        # stays in bounds meanwhile.
        label_used = row_ok & (label != ignore_index) & in_range
    else:
        label = tl.full([ROWS], -1, tl.int64)
        label_used = label >= 0
    label = tl.where(label_used, label, -1)
    tl.store(flag_ptr, 0, mask=tl.max(invalid.to(tl.int32), axis=0) > 0)

    mz = tl.full([ROWS], float("-inf"), ACC)
    mv = tl.full([ROWS], float("-inf"), ACC)
    sz = tl.zeros([ROWS], ACC)
    sv = tl.zeros([ROWS], ACC)
    cross = tl.zeros([ROWS], ACC)
    sb = tl.zeros([ROWS], ACC)
    sce = tl.zeros([ROWS], ACC)
    arg = tl.zeros([ROWS], tl.int32)

    if SINGLE_CHUNK:
        cols = tl.arange(0, BLOCK_C)
        ok = row_ok[:, None] & (cols < n_cols)[None, :]
        z = tl.load(z_row[:, None] + cols[None, :], mask=ok, other=float("-inf")).to(ACC)
        v = tl.load(v_row[:, None] + cols[None, :], mask=ok, other=float("-inf")).to(ACC)
        mz, mv, sz, sv, cross, arg, sb, sce = _kd_update(
            z, v, cols, ok, 0, mz, mv, sz, sv, cross, arg, sb, sce, inv_tau, KA, HAS_CE
        )
    else:
        for c0 in range(0, n_cols, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            ok = row_ok[:, None] & (cols < n_cols)[None, :]
            z = tl.load(z_row[:, None] + cols[None, :], mask=ok, other=float("-inf")).to(ACC)
            v = tl.load(v_row[:, None] + cols[None, :], mask=ok, other=float("-inf")).to(ACC)
            mz, mv, sz, sv, cross, arg, sb, sce = _kd_update(
                z, v, cols, ok, c0, mz, mv, sz, sv, cross, arg, sb, sce, inv_tau, KA, HAS_CE
            )

    # NaN or +inf anywhere, or a row of only -inf, makes the row NaN (as log_softmax would);
    # single -inf logits are masked classes.
    bad = ~(tl.abs(mz) < float("inf")) | ~(tl.abs(mv) < float("inf"))
    zs = shift(mz)
    vs = shift(mv)
    z_label = tl.load(z_row + label, mask=label_used, other=0.0).to(ACC)

    swapped = tl.zeros([ROWS], tl.int1)
    smoothed = tl.zeros([ROWS], tl.int1)
    ea_label = tl.zeros([ROWS], ACC)
    if KA == 1:
        swapped = label_used & (arg.to(tl.int64) != label) & ~bad
        z_arg = tl.load(z_row + arg, mask=swapped, other=0.0).to(ACC)
        v_label = tl.load(v_row + label, mask=swapped, other=0.0).to(ACC)
        ea_label = tl.exp((v_label - vs) * inv_tau)
        # Swapping v at the argmax and the label changes the cross sum by
        # (exp(a_j) - exp(a_y)) (b_j - b_y), with exp(a_j) = 1.
        cross += tl.where(swapped, (1.0 - ea_label) * (z_arg - z_label) * inv_tau, 0.0)
    if KA == 2:
        smoothed = label_used & (arg.to(tl.int64) != label) & ~bad

    log_sz = tl.log(sz)
    kl = cross / sv - tl.log(sv) + log_sz
    if KA == 1:
        # As kd_row_loss: a student -inf where the swapped target is positive (always at the label,
        # at the argmax unless exp(a_label) underflowed) is an infinite KL; the underflowed case
        # cannot be told from the sums (NaN rather than a wrong number).
        label_inf = z_label == float("-inf")
        arg_inf = z_arg == float("-inf")
        kl = tl.where(
            swapped & (label_inf | arg_inf),
            tl.where(label_inf | (ea_label > 0.0), float("inf"), float("nan")),
            kl,
        )
    if KA == 2:
        b_label = (z_label - zs) * inv_tau
        # lsr_off == 0 (lsr_p = 1) must not turn a -inf student logit into 0 * -inf.
        off_part = tl.where(lsr_off == 0.0, 0.0, lsr_off * (sb - b_label))
        smoothed_kl = lsr_neg_entropy - (off_part + lsr_on * b_label - log_sz)
        # lsr_p > 0 is on the label: a student -inf there is an infinite KL.
        smoothed_kl = tl.where(z_label == float("-inf"), float("inf"), smoothed_kl)
        kl = tl.where(smoothed, smoothed_kl, kl)
    if SCALE_TAU2:
        scale = tau * tau
    else:
        scale = tau * 0.0 + 1.0
    loss = scale * kl
    if HAS_CE:
        loss += tl.where(label_used, ce_weight * (tl.log(sce) - (z_label - zs)), 0.0)
    loss = tl.where(bad, float("nan"), loss)
    tl.store(loss_ptr + rows, loss, mask=row_ok)

    if WRITE_GRAD:
        # grad_scale (1/B for batchmean) is folded into the written gradient.
        s_over_tau = grad_scale * scale * inv_tau
        c_student = s_over_tau / sz
        c_teacher = tl.where(smoothed, 0.0, s_over_tau / sv)
        c_smooth = tl.where(smoothed, s_over_tau, 0.0)
        c_ce = tl.zeros([ROWS], ACC)
        c_ce_label = tl.zeros([ROWS], ACC)
        if HAS_CE:
            c_ce = tl.where(label_used, grad_scale * ce_weight / sce, 0.0)
            c_ce_label = tl.where(label_used, grad_scale * ce_weight, 0.0).to(ACC)
        g_row = grad_ptr + rows64 * grad_row_stride
        if SINGLE_CHUNK:
            g = _kd_grad_tile(
                z,
                v,
                cols,
                zs,
                vs,
                inv_tau,
                label,
                arg,
                swapped,
                ea_label,
                c_student,
                c_teacher,
                c_smooth,
                c_ce,
                c_ce_label,
                lsr_on,
                lsr_off,
                bad,
                KA,
                HAS_CE,
            )
            tl.store(g_row[:, None] + cols[None, :], g.to(grad_ptr.dtype.element_ty), mask=ok)
        else:
            for c0 in range(0, n_cols, BLOCK_C):
                cols = c0 + tl.arange(0, BLOCK_C)
                ok = row_ok[:, None] & (cols < n_cols)[None, :]
                z = tl.load(z_row[:, None] + cols[None, :], mask=ok, other=float("-inf")).to(ACC)
                v = tl.load(v_row[:, None] + cols[None, :], mask=ok, other=float("-inf")).to(ACC)
                g = _kd_grad_tile(
                    z,
                    v,
                    cols,
                    zs,
                    vs,
                    inv_tau,
                    label,
                    arg,
                    swapped,
                    ea_label,
                    c_student,
                    c_teacher,
                    c_smooth,
                    c_ce,
                    c_ce_label,
                    lsr_on,
                    lsr_off,
                    bad,
                    KA,
                    HAS_CE,
                )
                tl.store(g_row[:, None] + cols[None, :], g.to(grad_ptr.dtype.element_ty), mask=ok)


# Whether the kernels run in the Triton interpreter (which also runs them on CPU tensors).
INTERPRETED = runs_in_interpreter(_kd_loss_kernel)


def _xlogx(x: float) -> float:
    return x * math.log(x) if x > 0 else 0.0


def _smoothed_target(lsr_p: float, classes: int) -> tuple[float, float, float]:
    """(on, off, sum_k q_k log q_k) of the label-smoothing target, in double precision."""
    off = (1.0 - lsr_p) / (classes - 1) if classes > 1 else 0.0
    return lsr_p, off, _xlogx(lsr_p) + (classes - 1) * _xlogx(off)


def launch_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    compute_grad: bool,
    grad_scale: float = 1.0,
    config: RowBlockConfig | None = None,
    flag: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel on checked inputs (unit class stride, contiguous target and temperature).

    Returns row_loss (B,) float32 (float64 for float64 logits) and row_grad (B, C) in the logits'
    dtype (grad_scale times each row's gradient), or an empty (0,) tensor when compute_grad is
    False. The kernel clears `flag` (_launch.value_flag; a scratch one when None) when a label or
    a temperature is invalid. `config` overrides the launch shape (tests use it to force the
    chunked path on short rows). Call it on the inputs' device (common.device_guard).
    """
    rows, classes = student.shape
    if flag is None:
        flag = value_flag(student.device)
    acc = opmath_dtype(student.dtype)
    row_loss = torch.empty((rows,), dtype=acc, device=student.device)
    if compute_grad:
        row_grad = torch.empty((rows, classes), dtype=student.dtype, device=student.device)
    else:
        row_grad = torch.empty((0,), dtype=student.dtype, device=student.device)
    cfg = config if config is not None else row_block_config(classes)
    on, off, neg_entropy = _smoothed_target(lsr_p, classes)
    params_in_memory = acc == torch.float64
    params = (
        torch.tensor([on, off, neg_entropy, ce_weight, grad_scale], dtype=acc, device=student.device)
        if params_in_memory
        else row_loss  # never read
    )
    has_target = target is not None
    grid = (triton.cdiv(rows, cfg.rows),)
    with quiet_interpreter(INTERPRETED):
        _kd_loss_kernel[grid](
            student,
            teacher,
            target if has_target else temperature,
            temperature,
            params,
            row_loss,
            row_grad if compute_grad else row_loss,
            flag,
            rows,
            classes,
            student.stride(0),
            teacher.stride(0),
            classes,
            ignore_index,
            on,
            off,
            neg_entropy,
            ce_weight,
            grad_scale,
            KA=ka if has_target else KA_NONE,
            SCALE_TAU2=bool(scale_tau2),
            HAS_TARGET=has_target,
            HAS_CE=has_target and ce_weight != 0.0,
            WRITE_GRAD=bool(compute_grad),
            PARAMS_IN_MEMORY=params_in_memory,
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            ROWS=cfg.rows,
            BLOCK_C=cfg.block_c,
            SINGLE_CHUNK=cfg.single_chunk,
            num_warps=cfg.num_warps,
        )
    return row_loss, row_grad


_WHAT = (
    "a target label is out of range (labels must be in [0, classes) or equal ignore_index) or a "
    "temperature is not finite and > 0"
)


def name_bad_value(*args) -> None:
    """Raise the ValueError that names the bad label or temperature the kernel flagged."""
    KD_LOSS.check_values(*args)


def kd_loss_triton_impl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    compute_grad: bool,
    grad_scale: float = 1.0,
    reduction: int = REDUCE_NONE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op on inputs its spec checked, on their CUDA device (tskd_fast.ops.library)."""
    args = (
        student,
        teacher,
        target,
        temperature,
        ka,
        lsr_p,
        scale_tau2,
        ce_weight,
        ignore_index,
        compute_grad,
    )
    check_device_runs_triton(student, INTERPRETED)
    student = with_unit_class_stride(student)
    teacher = with_unit_class_stride(teacher)
    temperature = temperature.contiguous()
    if target is not None:
        target = target.contiguous()
    flag = value_flag(student.device)
    row_loss, row_grad = launch_kd_loss(
        student,
        teacher,
        target,
        temperature,
        ka,
        lsr_p,
        scale_tau2,
        ce_weight,
        ignore_index,
        compute_grad,
        grad_scale,
        flag=flag,
    )
    raise_if_flagged(flag, OP_NAME, _WHAT, lambda: name_bad_value(*args))
    if reduction == REDUCE_SUM:
        return row_loss.sum(), row_grad
    if reduction == REDUCE_MEAN:
        return row_loss.mean(), row_grad
    return row_loss, row_grad


#: The op overload, called like torch.ops.tskd_fast.kd_loss.default (tskd_fast.ops.kd_loss).
kd_loss_triton = define_triton(KD_LOSS, kd_loss_triton_impl)
