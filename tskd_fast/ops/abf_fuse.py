"""Autograd and fake (meta) kernels of the fused ABF (ReviewKD attention fusion) ops.

Every backend has a forward and a backward op:
    abf_fuse(x (N, M, h, w), y (N, M, h', w'), weight (2, 2M), bias (2,))
        -> (fused (N, M, h, w) x's dtype and layout, gates (N, h * w, 2) opmath)
    abf_fuse_backward(grad (N, M, h, w), x, y, weight, gates)
        -> (grad_x, grad_y, grad_weight (2, 2M) opmath, grad_bias (2,) opmath)
opmath is float32 (float64 for float64 maps); weight and bias are given in it. The forward keeps
the two per-pixel sigmoid values (tiny next to the maps) so that backward re-reads only grad,
x and y. The maps' layout: NHWC kernels for channels_last-contiguous maps that are not also
NCHW-contiguous, NCHW otherwise; the outputs come in that layout.
"""

from __future__ import annotations

import torch

from tskd_fast.ops.kd_loss import _eager


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def kernel_channels_last(t: torch.Tensor) -> bool:
    """Whether the kernels read `t` as NHWC (the rule of csrc/abf_hcl_checks.cpp)."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def empty_in_layout(t: torch.Tensor, channels_last: bool, shape=None, dtype=None) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(
        shape if shape is not None else t.shape,
        dtype=dtype if dtype is not None else t.dtype,
        device=t.device,
        memory_format=fmt,
    )


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


def _setup_context(ctx, inputs, output) -> None:
    x, y, weight, _ = inputs
    _, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, y, weight, gates)


def _input_grads(backward_op, saved, grad_fused, needs) -> tuple:
    """(grad_x, grad_y, grad_weight, grad_bias), None where `needs` (4 bools) says no."""
    x, y, weight, gates = saved
    grads = backward_op(grad_fused, x, y, weight, gates)
    return tuple(g if need else None for g, need in zip(grads, needs, strict=True))


def _backward_with(backward_op):
    def backward(ctx, grad_fused: torch.Tensor | None, grad_gates: torch.Tensor | None):
        if grad_fused is None:
            return None, None, None, None
        return _input_grads(backward_op, ctx.saved_tensors, grad_fused, ctx.needs_input_grad)

    return backward


def register_abf_fuse_ops(forward_op, backward_op) -> None:
    """Attach the shared fake kernels and the autograd formula to one backend's op pair."""
    torch.library.register_fake(forward_op, abf_fuse_fake)
    torch.library.register_fake(backward_op, abf_fuse_backward_fake)
    backward = _backward_with(_resolve(backward_op))
    torch.library.register_autograd(forward_op, backward, setup_context=_setup_context)


def _resolve(op):
    """An op given by name resolves to its OpOverload when first called (it may not exist yet)."""
    if not isinstance(op, str):
        return op
    namespace, name = op.split("::")

    def call(*args):
        return getattr(getattr(torch.ops, namespace), name).default(*args)

    return call


class _EagerAbfFuse(torch.autograd.Function):
    """The registered autograd formula applied directly, without torch.library's per-call
    argument rebuilding (as tskd_fast.ops.kd_loss does for kd_loss)."""

    @staticmethod
    def forward(ctx, forward_op, backward_op, x, y, weight, bias):
        with torch._C._AutoDispatchBelowAutograd():
            fused, gates = forward_op(x, y, weight, bias)
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, y, weight, gates)
        ctx.backward_op = backward_op
        return fused, gates

    @staticmethod
    def backward(ctx, grad_fused, grad_gates):
        if grad_fused is None:
            return (None,) * 6
        grads = _input_grads(ctx.backward_op, ctx.saved_tensors, grad_fused, ctx.needs_input_grad[2:])
        return (None, None, *grads)


def call_abf_fuse(forward_op, backward_op, x, y, weight, bias) -> torch.Tensor:
    """fused = forward_op(x, y, weight, bias)[0] with autograd, the lighter path when eager."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, y, weight, bias))
    if needs_grad and _eager(x) and not torch.compiler.is_compiling():
        return _EagerAbfFuse.apply(forward_op, backward_op, x, y, weight, bias)[0]
    return forward_op(x, y, weight, bias)[0]
