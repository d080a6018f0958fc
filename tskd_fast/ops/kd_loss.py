"""Autograd and fake (meta) kernels of the fused KD-loss ops.

Every backend's op has one signature:
    (student (B, C), teacher (B, C), target (B,) int64 | None, temperature (B,), ka: int,
     lsr_p: float, scale_tau2: bool, ce_weight: float, ignore_index: int, compute_grad: bool)
    -> (row_loss (B,) float32 (float64 for float64 logits), row_grad (B, C) logits dtype or (0,))
The forward computes each row's gradient, so backward is one scaling by the incoming gradient:
no softmax is kept alive and no second pass over the logits happens.
"""

from __future__ import annotations

import torch

KA_MODES = {"none": 0, "ps": 1, "lsr": 2}

OP_NAME = "tskd_fast::kd_loss"


def kd_loss_fake(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = student.shape[0]
    opmath = torch.float64 if student.dtype == torch.float64 else torch.float32
    row_loss = student.new_empty((rows,), dtype=opmath)
    row_grad = student.new_empty(student.shape) if compute_grad else student.new_empty((0,))
    return row_loss, row_grad


def kd_loss_setup_context(ctx, inputs, output) -> None:
    row_loss, row_grad = output
    ctx.mark_non_differentiable(row_grad)
    # row_grad is never differentiated: do not let autograd build a (B, C) zero gradient for it.
    ctx.set_materialize_grads(False)
    ctx.compute_grad = inputs[-1]
    ctx.save_for_backward(row_grad)


def kd_loss_backward(ctx, grad_row_loss: torch.Tensor, grad_row_grad: torch.Tensor | None):
    if not ctx.compute_grad:
        raise RuntimeError(
            "tskd_fast::kd_loss was called with compute_grad=False, so it kept no gradient; "
            "call it with compute_grad=True to backpropagate"
        )
    if grad_row_loss is None:  # the loss itself was not used (grads are not materialised)
        return (None,) * 10
    (row_grad,) = ctx.saved_tensors
    # The product is formed in float32 and written in the logits' dtype in one pass.
    grad_student = torch.mul(row_grad, grad_row_loss.unsqueeze(1), out=torch.empty_like(row_grad))
    return grad_student, None, None, None, None, None, None, None, None, None


def register_kd_loss_op(op) -> None:
    """Attach the shared fake kernel and autograd formula to one backend's kd_loss op."""
    torch.library.register_fake(op, kd_loss_fake)
    torch.library.register_autograd(op, kd_loss_backward, setup_context=kd_loss_setup_context)


def dtd_weight_fake(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    ignore_index: int,
) -> torch.Tensor:
    opmath = torch.float64 if student.dtype == torch.float64 else torch.float32
    return student.new_empty((student.shape[0],), dtype=opmath)
