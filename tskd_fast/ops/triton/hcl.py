"""ReviewKD's hierarchical context loss as a Triton kernel: the op tskd_fast::hcl_loss_triton.

Defined from the spec of tskd_fast.ops.hcl (schema, check, fake kernel, autograd formula), the same
as the C++ op tskd_fast::hcl_loss (csrc/cpu/hcl_kernel.h, csrc/include/tskd_fast/hcl_math.h).

A program owns one (n, c) plane, addressed through the map's strides (NCHW and channels_last in
place), walked in BLOCK-pixel chunks: per pooling window (the windows of every included level,
from a small table) a masked sum of d = fs - ft gives the pooled mean, its loss term and the
gradient coefficient of the window (kept in a scratch row); a last pass writes the gradient
d / (H W) plus the coefficients of the windows that hold each pixel. The per-plane loss terms
are summed afterwards in a fixed order.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tskd_fast.ops.common import empty_in_layout, kernel_channels_last, opmath_dtype
from tskd_fast.ops.hcl import HCL_LOSS
from tskd_fast.ops.library import define_triton
from tskd_fast.ops.triton._launch import check_device_runs_triton, quiet_interpreter, runs_in_interpreter

MAX_BLOCK = 1024


@triton.jit
def _hcl_kernel(
    fs_ptr,
    ft_ptr,
    grad_ptr,
    win_ptr,
    coef_ptr,
    scratch_ptr,
    plane_ptr,
    C,
    H,
    W,
    K,
    sfn,
    sfc,
    sfh,
    sfw,
    stn,
    stc,
    sth,
    stw,
    sgn,
    sgc,
    sgh,
    sgw,
    factor_ptr,
    WRITE_GRAD: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0)
    n = plane // C
    c = plane % C
    hw = H * W
    fs_base = fs_ptr + n * sfn + c * sfc
    ft_base = ft_ptr + n * stn + c * stc
    ssq = tl.zeros((BLOCK,), dtype=ACC)
    for p0 in range(0, hw, BLOCK):
        p = p0 + tl.arange(0, BLOCK)
        ok = p < hw
        u = p // W
        v = p % W
        d = tl.load(fs_base + u * sfh + v * sfw, mask=ok, other=0.0).to(ACC) - tl.load(
            ft_base + u * sth + v * stw, mask=ok, other=0.0
        ).to(ACC)
        ssq += d * d
    total = tl.sum(ssq, axis=0) / hw
    for k in range(K):
        r0 = tl.load(win_ptr + 4 * k)
        r1 = tl.load(win_ptr + 4 * k + 1)
        c0 = tl.load(win_ptr + 4 * k + 2)
        c1 = tl.load(win_ptr + 4 * k + 3)
        level_coef = tl.load(coef_ptr + k).to(ACC)
        s = tl.zeros((BLOCK,), dtype=ACC)
        for p0 in range(0, hw, BLOCK):
            p = p0 + tl.arange(0, BLOCK)
            u = p // W
            v = p % W
            inside = (p < hw) & (u >= r0) & (u < r1) & (v >= c0) & (v < c1)
            d = tl.load(fs_base + u * sfh + v * sfw, mask=inside, other=0.0).to(ACC) - tl.load(
                ft_base + u * sth + v * stw, mask=inside, other=0.0
            ).to(ACC)
            s += d
        count = ((r1 - r0) * (c1 - c0)).to(ACC)
        mean = tl.sum(s, axis=0) / count
        total += level_coef * mean * mean
        if WRITE_GRAD:
            tl.store(scratch_ptr + plane * K + k, level_coef * mean / count)
    tl.store(plane_ptr + plane, total)
    if WRITE_GRAD:
        # In memory, not a scalar argument: Triton passes Python floats as float32.
        grad_factor = tl.load(factor_ptr).to(ACC)
        g_base = grad_ptr + n * sgn + c * sgc
        for p0 in range(0, hw, BLOCK):
            p = p0 + tl.arange(0, BLOCK)
            ok = p < hw
            u = p // W
            v = p % W
            d = tl.load(fs_base + u * sfh + v * sfw, mask=ok, other=0.0).to(ACC) - tl.load(
                ft_base + u * sth + v * stw, mask=ok, other=0.0
            ).to(ACC)
            g = d / hw
            for k in range(K):
                r0 = tl.load(win_ptr + 4 * k)
                r1 = tl.load(win_ptr + 4 * k + 1)
                c0 = tl.load(win_ptr + 4 * k + 2)
                c1 = tl.load(win_ptr + 4 * k + 3)
                q = tl.load(scratch_ptr + plane * K + k)
                inside = (u >= r0) & (u < r1) & (v >= c0) & (v < c1)
                g += tl.where(inside, q, 0.0)
            tl.store(g_base + u * sgh + v * sgw, g * grad_factor, mask=ok)


INTERPRETED = runs_in_interpreter(_hcl_kernel)


def included_levels(levels: list[int], h: int) -> tuple[list[int], list[float], float]:
    """(included levels, their w_l / l^2, tot) as tskd_fast/hcl_math.h hcl_levels."""
    sizes, coefs, weight, tot = [], [], 1.0, 1.0
    for level in levels:
        if level >= h:
            continue
        weight *= 0.5
        sizes.append(level)
        coefs.append(weight / (level * level))
        tot += weight
    return sizes, coefs, tot


def window_table(sizes: list[int], coefs: list[float], h: int, w: int) -> tuple[list[int], list[float]]:
    """Every pooling window (r0, r1, c0, c1), flattened, and its level's coefficient."""
    table, table_coef = [], []
    for level, coef in zip(sizes, coefs, strict=True):
        for i in range(level):
            for j in range(level):
                table += [
                    (i * h) // level,
                    math.ceil((i + 1) * h / level),
                    (j * w) // level,
                    math.ceil((j + 1) * w / level),
                ]
                table_coef.append(coef)
    return table, table_coef


def _hcl_pair(
    student: torch.Tensor,
    teacher: torch.Tensor,
    levels: list[int],
    compute_grad: bool,
    grad_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, grad) of one stage pair."""
    n, c, h, w = student.shape
    acc = opmath_dtype(student.dtype)
    sizes, coefs, tot = included_levels(list(levels), h)
    table, table_coef = window_table(sizes, coefs, h, w)
    norm = tot * n * c
    device = student.device
    grad = (
        empty_in_layout(student, kernel_channels_last(student)) if compute_grad else student.new_empty((0,))
    )
    windows = torch.tensor(table or [0], dtype=torch.int32, device=device)
    window_coef = torch.tensor(table_coef or [0.0], dtype=acc, device=device)
    planes = torch.empty((n * c,), dtype=acc, device=device)
    scratch = torch.empty((n * c * max(1, len(table_coef)),), dtype=acc, device=device)
    block = min(MAX_BLOCK, triton.next_power_of_2(h * w))
    grad_arg = grad if compute_grad else planes
    grad_strides = grad.stride() if compute_grad else (0, 0, 0, 0)
    with quiet_interpreter(INTERPRETED):
        _hcl_kernel[(n * c,)](
            student,
            teacher,
            grad_arg,
            windows,
            window_coef,
            scratch,
            planes,
            c,
            h,
            w,
            len(table_coef),
            *student.stride(),
            *teacher.stride(),
            *grad_strides,
            torch.tensor([grad_scale * 2.0 / norm], dtype=acc, device=device),
            WRITE_GRAD=bool(compute_grad),
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            BLOCK=block,
        )
    loss = planes.sum() / norm
    return loss, grad


def hcl_loss_triton_impl(
    student_feats: list[torch.Tensor],
    teacher_feats: list[torch.Tensor],
    levels: list[int],
    compute_grad: list[bool],
    grad_scale: float = 1.0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The op on inputs its spec checked, on their CUDA device (tskd_fast.ops.library): the pairs'
    losses summed in order."""
    check_device_runs_triton(student_feats[0], INTERPRETED)
    loss, grads = None, []
    for fs, ft, want in zip(student_feats, teacher_feats, compute_grad, strict=True):
        pair_loss, grad = _hcl_pair(fs, ft, list(levels), want, grad_scale)
        loss = pair_loss if loss is None else loss + pair_loss
        grads.append(grad)
    return loss, grads


#: The op overload, called like torch.ops.tskd_fast.hcl_loss.default.
hcl_loss_triton = define_triton(HCL_LOSS, hcl_loss_triton_impl)
