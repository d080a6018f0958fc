"""The specs of the fused ABF (ReviewKD attention fusion) ops: a forward and its backward.

    abf_fuse(x (N, M, h, w), y (N, M, h', w'), weight (2, 2M), bias (2,))
        -> (fused (N, M, h, w) x's dtype and layout, gates (N, h * w, 2) opmath)
    abf_fuse_backward(grad (N, M, h, w), x, y, weight, gates)
        -> (grad_x, grad_y, grad_weight (2, 2M) opmath, grad_bias (2,) opmath)
opmath is float32 (float64 for float64 maps); weight and bias are given in it. The forward keeps
the two per-pixel sigmoid values (tiny next to the maps) so that backward re-reads only grad,
x and y. The maps' layout: tskd_fast.ops.common.kernel_channels_last of x; the outputs come in it.
"""

from __future__ import annotations

import torch

from tskd_fast.ops import checks
from tskd_fast.ops.common import empty_in_layout, kernel_channels_last, opmath_dtype
from tskd_fast.ops.library import declare
from tskd_fast.ops.spec import Autograd, OpSpec


def abf_fuse_fake(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    fused = empty_in_layout(x, kernel_channels_last(x))
    gates = x.new_empty((n, h * w, 2), dtype=opmath_dtype(x.dtype))
    return fused, gates


def abf_fuse_backward_fake(
    grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    channels_last = kernel_channels_last(x)
    opmath = opmath_dtype(x.dtype)
    return (
        empty_in_layout(x, channels_last),
        empty_in_layout(y, channels_last),
        x.new_empty((2, 2 * x.shape[1]), dtype=opmath),
        x.new_empty((2,), dtype=opmath),
    )


def _check_maps(x: torch.Tensor, y: torch.Tensor) -> None:
    checks.check_feature_map(x, "x")
    checks.check_feature_map(y, "y")
    checks.check_dtype_and_device(y, "y", x, "x", x.dtype)
    n, m, h, w = x.shape
    if y.shape[0] != n:
        checks.fail(f"y (the residual) has batch size {y.shape[0]} but x has {n}")
    if y.shape[1] != m:
        checks.fail(f"y (the residual) has {y.shape[1]} channels but x has {m}")
    if y.shape[2] > h or y.shape[3] > w:
        checks.fail(
            f"y (the residual) of spatial size {checks.shape_str(y.shape[2:])} cannot be fused into x of "
            f"size {checks.shape_str((h, w))}: the residual is upsampled, so it must be at most as large as x"
        )
    if h * w > 2**31 - 1:
        checks.fail(f"x has {h * w} pixels per map, at most 2^31 - 1 are supported")


def _check_weight(weight: torch.Tensor, x: torch.Tensor) -> None:
    checks.check_tensor(weight, "weight")
    if tuple(weight.shape) != (2, 2 * x.shape[1]):
        checks.fail(
            f"weight must have shape (2, 2M) = (2, {2 * x.shape[1]}), got {checks.shape_str(weight.shape)}"
        )
    checks.check_dtype_and_device(weight, "weight", x, "x", opmath_dtype(x.dtype))


def check_abf_fuse(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """The argument check (csrc/checks/abf.cpp says the same)."""
    _check_maps(x, y)
    _check_weight(weight, x)
    checks.check_tensor(bias, "bias")
    if tuple(bias.shape) != (2,):
        checks.fail(f"bias must have shape (2,), got {checks.shape_str(bias.shape)}")
    checks.check_dtype_and_device(bias, "bias", x, "x", opmath_dtype(x.dtype))


def check_abf_fuse_backward(
    grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor
) -> None:
    _check_maps(x, y)
    _check_weight(weight, x)
    checks.check_tensor(grad, "grad")
    if grad.shape != x.shape:
        checks.fail(
            f"grad must have the shape of x {checks.shape_str(x.shape)}, got {checks.shape_str(grad.shape)}"
        )
    checks.check_dtype_and_device(grad, "grad", x, "x", x.dtype)
    checks.check_tensor(gates, "gates")
    n, _, h, w = x.shape
    if tuple(gates.shape) != (n, h * w, 2):
        checks.fail(
            f"gates must have shape (N, h * w, 2) = ({n}, {h * w}, 2), got {checks.shape_str(gates.shape)}"
        )
    checks.check_dtype_and_device(gates, "gates", x, "x", opmath_dtype(x.dtype))


def abf_fuse_setup_context(ctx, inputs, output) -> None:
    x, y, weight, _ = inputs
    _, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, y, weight, gates)


def abf_fuse_backward(ctx, grad_fused: torch.Tensor | None, grad_gates: torch.Tensor | None):
    """(grad_x, grad_y, grad_weight, grad_bias) by the backward op, None where not needed."""
    if grad_fused is None:
        return None, None, None, None
    x, y, weight, gates = ctx.saved_tensors
    grads = ctx.backward_op(grad_fused, x, y, weight, gates)
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad, strict=True))


ABF_FUSE = declare(
    OpSpec(
        name="abf_fuse",
        family="abf",
        schema="(Tensor x, Tensor y, Tensor weight, Tensor bias) -> (Tensor fused, Tensor gates)",
        fake=abf_fuse_fake,
        check=check_abf_fuse,
        autograd=Autograd(abf_fuse_setup_context, abf_fuse_backward, backward_op="abf_fuse_backward"),
    )
)

ABF_FUSE_BACKWARD = declare(
    OpSpec(
        name="abf_fuse_backward",
        family="abf",
        schema=(
            "(Tensor grad, Tensor x, Tensor y, Tensor weight, Tensor gates) -> "
            "(Tensor grad_x, Tensor grad_y, Tensor grad_weight, Tensor grad_bias)"
        ),
        fake=abf_fuse_backward_fake,
        check=check_abf_fuse_backward,
    )
)
