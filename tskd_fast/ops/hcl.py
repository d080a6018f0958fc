"""Autograd and fake (meta) kernels of the fused HCL (ReviewKD hierarchical context loss) ops.

Every backend's op has one signature:
    (student (N, C, H, W), teacher (N, C, H, W), levels: list[int], compute_grad: bool,
     grad_scale: float = 1)
    -> (loss 0-d float32 (float64 for float64 maps),
        grad: grad_scale * d loss / d student, student's shape, dtype and kernel layout, or (0,))
The forward writes the gradient in the same pass that computes the loss (the minimal traffic:
read student and teacher once, write the gradient once), so backward is at most one scaling by
the incoming gradient. The teacher gets no gradient.
"""

from __future__ import annotations

import torch

from tskd_fast.ops._eager import call_without_node
from tskd_fast.ops.abf_fuse import empty_in_layout, kernel_channels_last, opmath_dtype
from tskd_fast.ops.kd_loss import _incoming_is_grad_scale


def hcl_loss_fake(
    student: torch.Tensor,
    teacher: torch.Tensor,
    levels: list[int],
    compute_grad: bool,
    grad_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    loss = student.new_empty((), dtype=opmath_dtype(student.dtype))
    grad = (
        empty_in_layout(student, kernel_channels_last(student)) if compute_grad else student.new_empty((0,))
    )
    return loss, grad


def hcl_setup_context(ctx, inputs, output) -> None:
    _, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.set_materialize_grads(False)
    ctx.num_inputs = len(inputs)
    ctx.compute_grad = inputs[3]
    ctx.grad_scale = inputs[4] if len(inputs) > 4 else 1.0
    ctx.save_for_backward(grad)


def hcl_backward(ctx, grad_loss: torch.Tensor | None, grad_grad: torch.Tensor | None):
    rest = (None,) * (ctx.num_inputs - 1)
    if grad_loss is None:
        return (None, *rest)
    if not ctx.compute_grad:
        raise RuntimeError(
            "tskd_fast::hcl_loss was called with compute_grad=False, so it kept no gradient; "
            "call it with compute_grad=True to backpropagate"
        )
    (grad,) = ctx.saved_tensors
    return (_scaled(grad, grad_loss, ctx.grad_scale), *rest)


def _scaled(grad: torch.Tensor, grad_loss: torch.Tensor, grad_scale: float) -> torch.Tensor:
    """The saved gradient (grad_scale * d loss / d student) times grad_loss / grad_scale."""
    if _incoming_is_grad_scale(grad_loss, grad_scale):
        return grad
    factor = (grad_loss / grad_scale).to(grad.dtype if grad.dtype == torch.float64 else torch.float32)
    return torch.mul(grad, factor, out=torch.empty_like(grad))


class _EagerHclPairs(torch.autograd.Function):
    """The summed loss of every stage pair as one autograd node: apply(op, levels, fs_0, ft_0,
    fs_1, ft_1, ...) calls op once per pair below autograd (gradients for the students that need
    one) and returns the sum of the losses; backward hands each saved gradient on, scaled by the
    incoming gradient when it is not 1. One node instead of one per pair plus the additions
    saves about 130 us per call over four pairs, the HCL of a CIFAR batch taking about 5 ms."""

    @staticmethod
    def forward(ctx, op, levels, *features):
        total, saved, wants = None, [], []
        with torch._C._AutoDispatchBelowAutograd():  # straight to the device kernel
            for i in range(0, len(features), 2):
                want = ctx.needs_input_grad[2 + i]
                loss, grad = op(features[i], features[i + 1], levels, want, 1.0)
                total = loss if total is None else total + loss
                if want:
                    saved.append(grad)
                wants.append(want)
        ctx.wants = wants
        ctx.save_for_backward(*saved)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        grads: list[torch.Tensor | None] = [None, None]
        for want in ctx.wants:
            grads += [_scaled(next(saved), grad_total, 1.0) if want else None, None]
        return tuple(grads)


def hcl_loss_of_pairs(op, students: list[torch.Tensor], teachers: list[torch.Tensor], levels: list[int]):
    """The sum over the stage pairs of op's loss (0-d, the kernels' compute dtype), with autograd
    to the students: one node for all pairs when eager, the op per pair (its registered autograd)
    when traced, the kernels alone when no gradient is wanted."""
    grad_enabled = torch.is_grad_enabled()
    if not torch.compiler.is_compiling() and grad_enabled and any(fs.requires_grad for fs in students):
        features = [t for pair in zip(students, teachers, strict=True) for t in pair]
        return _EagerHclPairs.apply(op, levels, *features)
    total = None
    for fs, ft in zip(students, teachers, strict=True):
        loss, _ = call_without_node(op, fs, ft, levels, fs.requires_grad and grad_enabled, 1.0)
        total = loss if total is None else total + loss
    return total


def register_hcl_loss_op(op) -> None:
    """Attach the shared fake kernel and autograd formula to one backend's hcl_loss op."""
    torch.library.register_fake(op, hcl_loss_fake)
    torch.library.register_autograd(op, hcl_backward, setup_context=hcl_setup_context)
