"""Eager calls of a single-op kernel with its registered autograd formula applied directly.

torch.library's generic autograd wrapper rebuilds the op's argument list from its schema on every
call, about 50 us: as long as the whole KD-loss kernel at (128, 100). Eager calls take the
autograd.Function below instead; traced ones (torch.compile, export, opcheck) the registered
autograd, so both paths share one setup_context and one backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def eager_function(name: str, setup_context: Callable, backward: Callable) -> type[torch.autograd.Function]:
    """An autograd.Function `name` whose apply(op, *args) runs op below autograd and records
    setup_context(ctx, args, out) / backward(ctx, *grads), the op's registered formula."""

    def forward(ctx, op, *args):
        with torch._C._AutoDispatchBelowAutograd():  # straight to the device kernel
            out = op(*args)
        setup_context(ctx, args, out)
        return out

    def backward_with_op(ctx, *grads):
        return (None, *backward(ctx, *grads))

    return type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward_with_op)},
    )


def call_eager(function: type[torch.autograd.Function], op, *args):
    """op(*args) for any backend's op: through `function` when eager and args[0] needs a gradient,
    else as call_without_node does."""
    if not torch.compiler.is_compiling() and args[0].requires_grad and torch.is_grad_enabled():
        return function.apply(op, *args)
    return call_without_node(op, *args)


def call_without_node(op, *args):
    """op(*args) with no eager autograd node: the op itself (its registered autograd) when traced,
    straight to the kernel when eager, for calls that have nothing to record."""
    if torch.compiler.is_compiling():
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():  # nothing to record: skip the autograd wrapper
        return op(*args)
