"""The specs of the fused ConvLSTM gate ops: a forward and its backward.

    convlstm_gates(gates (B, 4*C_h, H, W), c_prev (B, C_h, H, W), w_ci, w_cf, w_co: (C_h, H, W) or
                   (1, C_h, H, W) | None) -> (h, c), each (B, C_h, H, W) in the dtype of gates
    convlstm_gates_backward(grad_h | None, grad_c | None, gates, c_prev, w_ci, w_cf, w_co,
                            peephole_grads: bool)
        -> (grad_gates, grad_c_prev, grad_w_ci, grad_w_cf, grad_w_co)
Outputs and state gradients take the layout of gates (tskd_fast.ops.common.kernel_channels_last).
A peephole gradient is the batch sum, contiguous and of the peephole's shape; it is an empty (0,)
tensor when that peephole is None or peephole_grads is False.

The forward saves its inputs only (gates and c_prev, no activations): the backward op recomputes
the activations from the pre-activations, so a step keeps 5 * C_h planes alive instead of 10.
"""

from __future__ import annotations

import torch

from tskd_fast.ops import checks
from tskd_fast.ops.common import empty_in_layout, kernel_channels_last
from tskd_fast.ops.library import declare
from tskd_fast.ops.spec import Autograd, OpSpec


def convlstm_gates_fake(
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None,
    w_co: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    channels_last = kernel_channels_last(gates)
    h = empty_in_layout(gates, channels_last, shape=c_prev.shape)
    c = empty_in_layout(gates, channels_last, shape=c_prev.shape)
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
    channels_last = kernel_channels_last(gates)
    grad_gates = empty_in_layout(gates, channels_last)
    grad_c_prev = empty_in_layout(gates, channels_last, shape=c_prev.shape)

    def peephole_grad(w: torch.Tensor | None) -> torch.Tensor:
        return gates.new_empty(w.shape if w is not None and peephole_grads else (0,))

    return grad_gates, grad_c_prev, peephole_grad(w_ci), peephole_grad(w_cf), peephole_grad(w_co)


def _check_peephole(w: torch.Tensor | None, name: str, gates: torch.Tensor, c_prev: torch.Tensor) -> None:
    if w is None:
        return
    checks.check_tensor(w, name)
    plane = tuple(c_prev.shape[1:])
    if tuple(w.shape) not in (plane, (1, *plane)):
        checks.fail(
            f"{name} must have shape (C_h, H, W) = {checks.shape_str(plane)} or (1, C_h, H, W) = "
            f"{checks.shape_str((1, *plane))}, got {checks.shape_str(w.shape)}"
        )
    if w.dtype != gates.dtype:
        checks.fail(f"{name} must have the dtype of gates ({gates.dtype}), got {w.dtype}")
    if w.device != gates.device:
        checks.fail(f"{name} is on {w.device} but gates is on {gates.device}")


def check_convlstm_gates(
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None,
    w_co: torch.Tensor | None = None,
) -> None:
    """The argument check (csrc/checks/convlstm.cpp says the same)."""
    checks.check_tensor(gates, "gates")
    checks.check_tensor(c_prev, "c_prev")
    for t, name in ((gates, "gates"), (c_prev, "c_prev")):
        if t.dtype not in checks.KERNEL_DTYPES:
            checks.fail(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if c_prev.dim() != 4:
        checks.fail(f"c_prev must be 4-D (B, C_h, H, W), got shape {checks.shape_str(c_prev.shape)}")
    batch, hidden, height, width = c_prev.shape
    expected = (batch, 4 * hidden, height, width)
    if tuple(gates.shape) != expected:
        checks.fail(
            f"gates must have shape (B, 4*C_h, H, W) = {checks.shape_str(expected)} for c_prev of shape "
            f"{checks.shape_str(c_prev.shape)} (channels in the order i, f, g, o), got "
            f"{checks.shape_str(gates.shape)}"
        )
    if c_prev.dtype != gates.dtype:
        checks.fail(f"c_prev must have the dtype of gates ({gates.dtype}), got {c_prev.dtype}")
    if c_prev.device != gates.device:
        checks.fail(f"c_prev is on {c_prev.device} but gates is on {gates.device}")
    if gates.dtype == torch.float64 and gates.device.type != "cpu":
        checks.fail("float64 gates are supported on the CPU only")
    for w, name in ((w_ci, "w_ci"), (w_cf, "w_cf"), (w_co, "w_co")):
        _check_peephole(w, name, gates, c_prev)


def _check_state_grad(grad: torch.Tensor | None, name: str, c_prev: torch.Tensor) -> None:
    if grad is None:
        return
    checks.check_tensor(grad, name)
    if grad.shape != c_prev.shape:
        checks.fail(
            f"{name} must have the shape of c_prev {checks.shape_str(c_prev.shape)}, got "
            f"{checks.shape_str(grad.shape)}"
        )
    if grad.dtype != c_prev.dtype:
        checks.fail(f"{name} must have the dtype of gates ({c_prev.dtype}), got {grad.dtype}")
    if grad.device != c_prev.device:
        checks.fail(f"{name} is on {grad.device} but gates is on {c_prev.device}")


def check_convlstm_gates_backward(grad_h, grad_c, gates, c_prev, w_ci, w_cf, w_co, peephole_grads) -> None:
    check_convlstm_gates(gates, c_prev, w_ci, w_cf, w_co)
    _check_state_grad(grad_h, "grad_h", c_prev)
    _check_state_grad(grad_c, "grad_c", c_prev)


def convlstm_gates_setup_context(ctx, inputs, output) -> None:
    gates, c_prev, *peepholes = inputs
    peepholes += [None] * (3 - len(peepholes))
    # An unused h or c arrives as None and is read as zero, without a zero tensor.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(gates, c_prev, *peepholes)


def convlstm_gates_backward(ctx, grad_h: torch.Tensor | None, grad_c: torch.Tensor | None):
    """The gradients of (gates, c_prev, w_ci, w_cf, w_co) from the saved inputs by the backward op."""
    if grad_h is None and grad_c is None:
        return (None,) * 5
    needs = tuple(ctx.needs_input_grad) + (False,) * (5 - len(ctx.needs_input_grad))
    gates, c_prev, w_ci, w_cf, w_co = ctx.saved_tensors
    grads = ctx.backward_op(grad_h, grad_c, gates, c_prev, w_ci, w_cf, w_co, any(needs[2:5]))
    return tuple(g if need else None for g, need in zip(grads, needs[:5], strict=True))


CONVLSTM_GATES = declare(
    OpSpec(
        name="convlstm_gates",
        family="convlstm",
        schema=(
            "(Tensor gates, Tensor c_prev, Tensor? w_ci=None, Tensor? w_cf=None, Tensor? w_co=None) "
            "-> (Tensor h, Tensor c)"
        ),
        fake=convlstm_gates_fake,
        check=check_convlstm_gates,
        autograd=Autograd(
            convlstm_gates_setup_context, convlstm_gates_backward, backward_op="convlstm_gates_backward"
        ),
    )
)

CONVLSTM_GATES_BACKWARD = declare(
    OpSpec(
        name="convlstm_gates_backward",
        family="convlstm",
        schema=(
            "(Tensor? grad_h, Tensor? grad_c, Tensor gates, Tensor c_prev, Tensor? w_ci, Tensor? w_cf, "
            "Tensor? w_co, bool peephole_grads) -> (Tensor grad_gates, Tensor grad_c_prev, "
            "Tensor grad_w_ci, Tensor grad_w_cf, Tensor grad_w_co)"
        ),
        fake=convlstm_gates_backward_fake,
        check=check_convlstm_gates_backward,
    )
)
