"""The op contract as data: one `OpSpec` per op, declared in tskd_fast/ops/<family>.py.

A spec is everything about an op that does not depend on the backend:
    name       the op's name in the tskd_fast namespace (torch.ops.tskd_fast.<name>)
    family     the family's name, the file name of every layer (tskd_fast/ops/triton/<family>.py,
               csrc/cpu/<family>.cpp, ...)
    schema     the signature, "(Tensor student, ...) -> (Tensor loss, ...)"; the C++ op defines
               the same in csrc/ops.cpp (tests/test_op_specs.py checks that they agree) and the
               Triton op `<name>_triton` is defined from this one
    fake       the fake (meta) kernel: outputs of the right shape, dtype, device and layout
    check      the Python argument check, raising ValueError that names the argument (the C++
               ops raise the same words from csrc/checks/<family>.cpp); reads no tensor values
    check_values
               the check of the values only the data shows (labels in range, temperatures > 0),
               for CPU tensors; the Triton kernels flag a bad value, this names it
    autograd   the autograd formula (`Autograd`), for ops with a gradient
    differentiable
               False for ops whose outputs have no gradient by definition (weights, temperatures):
               their outputs never require grad (the C++ ops fall through autograd); an op that is
               differentiable but has no formula (a backward op) fails when differentiated

tskd_fast.ops.library turns the specs into ops: it registers the fake kernels of the C++ ops
(whose autograd is C++, csrc/autograd/<family>.cpp), defines the Triton ops with their check,
fake kernel and autograd formula, and gives each backend's op (`op_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Autograd:
    """The autograd formula of an op, as torch.library.register_autograd takes it.

    setup_context(ctx, inputs, output) saves what backward needs; backward(ctx, *grads) returns one
    gradient or None per argument of the schema (a list for a Tensor[] argument), reading
    ctx.needs_input_grad (one flag per argument, a list for a Tensor[] argument). backward_op: the
    name of the op the backward calls; the library sets ctx.backward_op to that op of the forward
    op's backend. The C++ ops carry the same formula in C++ (csrc/autograd/<family>.cpp).
    """

    setup_context: Callable
    backward: Callable
    backward_op: str | None = None


@dataclass(frozen=True)
class OpSpec:
    """One op of a family (see the module docstring)."""

    name: str
    family: str
    schema: str
    fake: Callable
    check: Callable | None = None
    check_values: Callable | None = None
    autograd: Autograd | None = None
    differentiable: bool = True

    @property
    def qualname(self) -> str:
        return f"tskd_fast::{self.name}"

    @property
    def triton_name(self) -> str:
        return f"{self.name}_triton"
