"""Autograd and fake (meta) kernels of the fused ConvLSTM gate ops.

Every backend has a forward and a backward op with one pair of signatures:
    forward:  (gates (B, 4*C_h, H, W), c_prev (B, C_h, H, W), w_ci, w_cf, w_co: (C_h, H, W) or
               (1, C_h, H, W) | None) -> (h, c), each (B, C_h, H, W) in the dtype of gates
    backward: (grad_h | None, grad_c | None, gates, c_prev, w_ci, w_cf, w_co, peephole_grads: bool)
              -> (grad_gates, grad_c_prev, grad_w_ci, grad_w_cf, grad_w_co)
Outputs and state gradients take the layout of gates: channels_last when gates are dense in it
and not in NCHW, else NCHW (contiguous). A peephole gradient is the batch sum, contiguous and of
the peephole's shape; it is an empty (0,) tensor when that peephole is None or peephole_grads is
False.

The forward saves its inputs only (gates and c_prev, no activations): the backward op recomputes
the activations from the pre-activations, so a step keeps 5 * C_h planes alive instead of 10.
"""

from __future__ import annotations

import torch

from tskd_fast.ops.kd_loss import _eager

OP_NAME = "tskd_fast::convlstm_gates"
BACKWARD_OP_NAME = "tskd_fast::convlstm_gates_backward"


def kernel_memory_format(gates: torch.Tensor) -> torch.memory_format:
    """The layout the kernels compute in and write their outputs in (csrc convlstm_channels_last)."""
    if not gates.is_contiguous() and gates.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def convlstm_gates_fake(
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None,
    w_co: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    fmt = kernel_memory_format(gates)
    shape = c_prev.shape
    h = torch.empty(shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
    c = torch.empty(shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
    return h, c


def convlstm_gates_backward_fake(
    grad_h: torch.Tensor | None,
    grad_c: torch.Tensor | None,
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None,
    w_cf: torch.Tensor | None,
    w_co: torch.Tensor | None,
    peephole_grads: bool,
) -> tuple[torch.Tensor, ...]:
    fmt = kernel_memory_format(gates)
    grad_gates = torch.empty(gates.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
    grad_c_prev = torch.empty(c_prev.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)

    def peephole_grad(w: torch.Tensor | None) -> torch.Tensor:
        if w is None or not peephole_grads:
            return gates.new_empty((0,))
        return gates.new_empty(w.shape)

    return grad_gates, grad_c_prev, peephole_grad(w_ci), peephole_grad(w_cf), peephole_grad(w_co)


def convlstm_gates_setup_context(ctx, inputs, output) -> None:
    gates, c_prev, *peepholes = inputs
    peepholes += [None] * (3 - len(peepholes))
    # An unused h or c arrives as None and is read as zero, without a zero tensor.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(gates, c_prev, *peepholes)


def convlstm_gates_backward(backward_op, ctx, needs, grad_h, grad_c):
    """The gradients of (gates, c_prev, w_ci, w_cf, w_co) from the saved inputs; `needs` says
    which inputs want one."""
    if grad_h is None and grad_c is None:
        return (None,) * 5
    gates, c_prev, w_ci, w_cf, w_co = ctx.saved_tensors
    grads = backward_op(grad_h, grad_c, gates, c_prev, w_ci, w_cf, w_co, any(needs[2:5]))
    return tuple(g if need else None for g, need in zip(grads, needs[:5], strict=True))


def make_convlstm_gates_backward(backward_op):
    """The autograd backward of a forward op whose gradients come from `backward_op`."""

    def backward(ctx, grad_h: torch.Tensor | None, grad_c: torch.Tensor | None):
        needs = tuple(ctx.needs_input_grad) + (False,) * (5 - len(ctx.needs_input_grad))
        return convlstm_gates_backward(backward_op, ctx, needs, grad_h, grad_c)

    return backward


class _EagerConvLstmGates(torch.autograd.Function):
    """The registered autograd formula applied directly to an eager call.

    torch.library's generic autograd wrapper rebuilds the argument list from the schema on every
    call (tens of microseconds); eager calls take this path, traced ones (torch.compile, export,
    opcheck) the registered autograd, which runs the same setup_context and backward.
    """

    @staticmethod
    def forward(ctx, op, backward_op, *args):
        with torch._C._AutoDispatchBelowAutograd():  # straight to the device kernel
            out = op(*args)
        convlstm_gates_setup_context(ctx, args, out)
        ctx.backward_op = backward_op
        return out

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        needs = ctx.needs_input_grad[2:]
        return (None, None, *convlstm_gates_backward(ctx.backward_op, ctx, needs, grad_h, grad_c))


def call_convlstm_gates(op, backward_op, gates, c_prev, w_ci=None, w_cf=None, w_co=None):
    """op(gates, c_prev, w_ci, w_cf, w_co) with the lighter autograd path when eager."""
    args = (gates, c_prev, w_ci, w_cf, w_co)
    wants_grad = any(isinstance(t, torch.Tensor) and t.requires_grad for t in args)
    if wants_grad and torch.is_grad_enabled() and _eager(gates):
        return _EagerConvLstmGates.apply(op, backward_op, *args)
    return op(*args)


def register_convlstm_gates_ops(op, backward_op, backward_callable) -> None:
    """Attach the shared fake kernels and autograd formula to one backend's pair of ops.

    op / backward_op: the ops (or their qualified names) to register on; backward_callable: what
    the autograd backward calls (the backward op's overload).
    """
    torch.library.register_fake(op, convlstm_gates_fake)
    torch.library.register_fake(backward_op, convlstm_gates_backward_fake)
    torch.library.register_autograd(
        op,
        make_convlstm_gates_backward(backward_callable),
        setup_context=convlstm_gates_setup_context,
    )
