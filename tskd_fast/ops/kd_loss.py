"""Autograd and fake (meta) kernels of the fused KD-loss ops.

Every backend's op has one signature:
    (student (B, C), teacher (B, C), target (B,) int64 | None, temperature (B,), ka: int,
     lsr_p: float, scale_tau2: bool, ce_weight: float, ignore_index: int, compute_grad: bool,
     grad_scale: float = 1)
    -> (row_loss (B,) float32 (float64 for float64 logits),
        row_grad (B, C) logits dtype: grad_scale * d row_loss[n] / d student[n], or (0,))
The forward computes each row's gradient, so backward is at most one scaling by the incoming
gradient: no softmax is kept alive and no second pass over the logits happens.

What backward costs depends on the device. On the CPU, when the incoming gradient is exactly
grad_scale on every row (loss.backward() of a batchmean or sum loss), the gradient written by the
forward is handed on as it is, without touching it again. On CUDA (and whenever traced) every
backward writes a new (B, C) tensor, row_grad * incoming / grad_scale: one read and one write of
B x C elements, in the logits' dtype. Telling that the incoming gradient is exactly grad_scale would
need its values on the host, a stream synchronisation per step, which costs more than the pass
at every size and would stall the GPU; and under AMP's GradScaler the incoming gradient is never
grad_scale anyway.
"""

from __future__ import annotations

import torch

from tskd_fast.ops._eager import call_eager, eager_function

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
    grad_scale: float = 1.0,
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
    ctx.num_inputs = len(inputs)
    ctx.compute_grad = inputs[9]
    ctx.grad_scale = inputs[10] if len(inputs) > 10 else 1.0
    ctx.save_for_backward(row_grad)


# The dispatch modes that trace or fake tensors (torch internals: looked up defensively, so that a
# torch without them only loses the CPU backward shortcut below, never correctness).
_MODE_KEYS = getattr(torch._C, "_TorchDispatchModeKey", None)
_TRACING_MODES = tuple(
    getattr(_MODE_KEYS, name) for name in ("PROXY", "FAKE", "FUNCTIONAL") if hasattr(_MODE_KEYS, name)
)
_get_dispatch_mode = getattr(torch._C, "_get_dispatch_mode", None)


def _eager(t: torch.Tensor) -> bool:
    """Whether t holds real values that may be read now (not traced, faked or compiled); False
    when this torch cannot tell."""
    if torch.compiler.is_compiling() or type(t) is not torch.Tensor:
        return False
    if _get_dispatch_mode is None or len(_TRACING_MODES) != 3:
        return False
    return all(_get_dispatch_mode(key) is None for key in _TRACING_MODES)


def _incoming_is_grad_scale(grad_row_loss: torch.Tensor, grad_scale: float) -> bool:
    """Whether every row's incoming gradient equals grad_scale. Checked eagerly on the CPU only:
    reading the values is free there, but a device sync on CUDA (so CUDA backward always scales,
    see the module docstring) and data-dependent when traced."""
    if grad_row_loss.device.type != "cpu" or not _eager(grad_row_loss):
        return False
    if grad_row_loss.dim() == 0:  # a summed loss (HCL): one read instead of two small ops
        return grad_row_loss.item() == grad_scale
    return bool((grad_row_loss == grad_scale).all())


def kd_loss_backward(ctx, grad_row_loss: torch.Tensor | None, grad_row_grad: torch.Tensor | None):
    rest = (None,) * (ctx.num_inputs - 1)
    if grad_row_loss is None:  # the loss itself was not used (grads are not materialised)
        return (None, *rest)
    if not ctx.compute_grad:
        raise RuntimeError(
            "tskd_fast::kd_loss was called with compute_grad=False, so it kept no gradient; "
            "call it with compute_grad=True to backpropagate"
        )
    (row_grad,) = ctx.saved_tensors
    if _incoming_is_grad_scale(grad_row_loss, ctx.grad_scale):
        # The saved gradient is already the answer. Handing it on is safe: autograd clones it
        # before accumulating while the graph (and so this saved tensor) is retained.
        return (row_grad, *rest)
    per_row = (grad_row_loss / ctx.grad_scale).unsqueeze(1)
    # The product is formed in float32 and written in the logits' dtype in one pass.
    grad_student = torch.mul(row_grad, per_row, out=torch.empty_like(row_grad))
    return (grad_student, *rest)


_EagerKdLoss = eager_function("_EagerKdLoss", kd_loss_setup_context, kd_loss_backward)


def call_kd_loss(op, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """op(*args) for any backend's kd_loss op, with the lighter autograd path when eager."""
    return call_eager(_EagerKdLoss, op, *args)


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
