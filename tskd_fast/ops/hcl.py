"""The spec of the fused HCL op (ReviewKD's hierarchical context loss) over every stage pair.

    hcl_loss(student_feats: list of (N_i, C_i, H_i, W_i), teacher_feats: the same shapes,
             levels: list[int], compute_grad: list[bool] (one per pair), grad_scale: float = 1)
    -> (loss: the sum over the pairs, 0-d float32 (float64 for float64 maps),
        grads: per pair grad_scale * d loss / d student_feats[i] in its shape, dtype and kernel
               layout, or (0,) where compute_grad[i] is False)
The forward writes each pair's gradient in the same pass that computes its loss (the minimal
traffic: read student and teacher once, write the gradient once), so backward is at most one
scaling by the incoming gradient. The teachers get no gradient. All pairs in one op call: one
autograd node and one trip through the dispatcher for the whole loss.
"""

from __future__ import annotations

import math

import torch

from tskd_fast.ops import checks
from tskd_fast.ops.common import empty_in_layout, kernel_channels_last, opmath_dtype, scale_saved_gradient
from tskd_fast.ops.library import declare
from tskd_fast.ops.spec import Autograd, OpSpec

MAX_LEVELS = 8  # csrc/include/tskd_fast/hcl_math.h kHclMaxLevels


def hcl_loss_fake(
    student_feats: list[torch.Tensor],
    teacher_feats: list[torch.Tensor],
    levels: list[int],
    compute_grad: list[bool],
    grad_scale: float = 1.0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    first = student_feats[0]
    loss = first.new_empty((), dtype=opmath_dtype(first.dtype))
    grads = [
        empty_in_layout(fs, kernel_channels_last(fs)) if want else fs.new_empty((0,))
        for fs, want in zip(student_feats, compute_grad, strict=True)
    ]
    return loss, grads


def check_hcl_loss(
    student_feats: list[torch.Tensor],
    teacher_feats: list[torch.Tensor],
    levels: list[int],
    compute_grad: list[bool],
    grad_scale: float = 1.0,
) -> None:
    """The argument check (csrc/checks/hcl.cpp says the same)."""
    if len(student_feats) == 0:
        checks.fail("student_feats is empty: at least one stage pair is needed")
    if len(teacher_feats) != len(student_feats):
        checks.fail(
            f"student_feats has {len(student_feats)} levels but teacher_feats has {len(teacher_feats)}: "
            f"one teacher feature per student feature is needed"
        )
    if len(compute_grad) != len(student_feats):
        checks.fail(
            f"compute_grad must have one flag per stage pair ({len(student_feats)}), got {len(compute_grad)}"
        )
    for i, (fs, ft) in enumerate(zip(student_feats, teacher_feats, strict=True)):
        s_name, t_name = f"student_feats[{i}]", f"teacher_feats[{i}]"
        checks.check_feature_map(fs, s_name)
        checks.check_feature_map(ft, t_name)
        checks.check_dtype_and_device(
            fs, s_name, student_feats[0], "student_feats[0]", student_feats[0].dtype
        )
        checks.check_dtype_and_device(ft, t_name, fs, s_name, fs.dtype)
        if ft.shape[0] != fs.shape[0]:
            checks.fail(f"{t_name} has batch size {ft.shape[0]} but {s_name} has {fs.shape[0]}")
        if ft.shape[1] != fs.shape[1]:
            checks.fail(f"{t_name} has {ft.shape[1]} channels but {s_name} has {fs.shape[1]}")
        if ft.shape != fs.shape:
            checks.fail(
                f"{t_name} has spatial size {checks.shape_str(ft.shape[2:])} but {s_name} has "
                f"{checks.shape_str(fs.shape[2:])}: HCL compares features of one size"
            )
    if len(levels) > MAX_LEVELS:
        checks.fail(f"at most {MAX_LEVELS} levels, got {len(levels)}")
    if any(lv < 1 for lv in levels):
        checks.fail(f"levels must all be >= 1 (pooled sizes), got {checks.shape_str(levels)}")
    if not math.isfinite(grad_scale):
        checks.fail(f"grad_scale must be finite, got {checks.num(grad_scale)}")


def hcl_setup_context(ctx, inputs, output) -> None:
    _, grads = output
    ctx.mark_non_differentiable(*grads)
    ctx.set_materialize_grads(False)
    ctx.pairs = len(grads)
    # An empty list of levels is a node of the inputs' structure, which backward's answer mirrors.
    ctx.levels_grad = [] if len(inputs[2]) == 0 else None
    ctx.compute_grad = list(inputs[3])
    ctx.grad_scale = inputs[4] if len(inputs) > 4 else 1.0
    ctx.save_for_backward(*grads)


def hcl_backward(ctx, grad_loss: torch.Tensor | None, grad_grads):
    pairs = ctx.pairs
    grads: list[torch.Tensor | None] = [None] * pairs
    if grad_loss is not None:
        needs = ctx.needs_input_grad[0]
        for i, saved in enumerate(ctx.saved_tensors):
            if not needs[i]:
                continue
            if not ctx.compute_grad[i]:
                raise RuntimeError(
                    f"tskd_fast::hcl_loss was called with compute_grad[{i}]=False, so it kept no gradient "
                    f"of student_feats[{i}]; call it with compute_grad=True to backpropagate"
                )
            grads[i] = scale_saved_gradient(saved, grad_loss, 1.0, ctx.grad_scale)
    return grads, [None] * pairs, ctx.levels_grad, None, None


HCL_LOSS = declare(
    OpSpec(
        name="hcl_loss",
        family="hcl",
        schema=(
            "(Tensor[] student_feats, Tensor[] teacher_feats, int[] levels, bool[] compute_grad, "
            "float grad_scale=1.) -> (Tensor loss, Tensor[] grads)"
        ),
        fake=hcl_loss_fake,
        check=check_hcl_loss,
        autograd=Autograd(hcl_setup_context, hcl_backward),
    )
)
