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

from tskd_fast.ops._eager import call_eager, eager_function
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
    if _incoming_is_grad_scale(grad_loss, ctx.grad_scale):
        return (grad, *rest)
    factor = (grad_loss / ctx.grad_scale).to(grad.dtype if grad.dtype == torch.float64 else torch.float32)
    return (torch.mul(grad, factor, out=torch.empty_like(grad)), *rest)


_EagerHclLoss = eager_function("_EagerHclLoss", hcl_setup_context, hcl_backward)


def call_hcl_loss(op, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """op(*args) for any backend's hcl_loss op, with the lighter autograd path when eager."""
    return call_eager(_EagerHclLoss, op, *args)


def register_hcl_loss_op(op) -> None:
    """Attach the shared fake kernel and autograd formula to one backend's hcl_loss op."""
    torch.library.register_fake(op, hcl_loss_fake)
    torch.library.register_autograd(op, hcl_backward, setup_context=hcl_setup_context)
