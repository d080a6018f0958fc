"""Turns the op specs (tskd_fast.ops.spec) into ops: the one place that registers anything.

- The C++ ops (torch.ops.tskd_fast.<name>, csrc/ops.cpp) get the spec's fake kernel; their
  autograd is C++ (csrc/autograd/<family>.cpp), so an eager call and its backward never enter
  Python.
- The Triton ops (torch.ops.tskd_fast.<name>_triton) are defined from the spec: its schema, its
  check before the kernel, its fake kernel and its autograd formula, with the backward op taken
  from the same backend. They are defined when the Triton backend is first used (importing
  tskd_fast.ops.triton.<family>, which calls `define_triton`).
- The ops written in Python over other ops (kernels=("python",), such as a chunked driver) are
  defined from their spec by `define_python`: one op for every backend.
- `op_for(backend, name)` gives a backend's op; `call(spec, backend, args)` calls it: an eager call
  of a C++ op through its entry point in tskd_fast._C, an eager Triton call through a light
  autograd.Function over the spec's formula (torch.library's generic autograd wrapper rebuilds the
  argument list from the schema on every call).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch._library.autograd import supports_tensorlist

from tskd_fast.ops import _extension
from tskd_fast.ops.common import device_guard, values_readable
from tskd_fast.ops.spec import OpSpec

SPECS: dict[str, OpSpec] = {}
_OPS: dict[tuple[str, str], Callable] = {}
_EAGER: dict[str, type[torch.autograd.Function]] = {}


def declare(spec: OpSpec) -> OpSpec:
    """Record `spec`; when the extension is loaded, give its C++ op the spec's fake kernel."""
    SPECS[spec.name] = spec
    if "cpp" in spec.kernels and _extension.has_cpu_kernels():
        torch.library.register_fake(spec.qualname, _checked_fake(spec))
        # Known before any call: a compiled step that filled this on its first trace would be
        # guarded on the key's absence and traced a second time on its next call.
        op = getattr(torch.ops.tskd_fast, spec.name).default
        _OPS[("cpu", spec.name)] = _OPS[("cuda", spec.name)] = op
    return spec


def _checked_fake(spec: OpSpec) -> Callable:
    """The spec's fake kernel after its check: a traced call (torch.compile, meta tensors) is
    rejected as an eager one is, the check reading only shapes, dtypes and devices."""
    if spec.check is None:
        return spec.fake

    def fake(*args):
        spec.check(*args)
        return spec.fake(*args)

    fake.__name__ = f"{spec.name}_fake"
    return fake


def _first_tensor(args) -> torch.Tensor:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, list | tuple) and a and isinstance(a[0], torch.Tensor):
            return a[0]
    raise ValueError("the op has no tensor argument")


def define_triton(spec: OpSpec, impl: Callable) -> Callable:
    """Define torch.ops.tskd_fast.<name>_triton from `spec` and `impl` (the launch on checked
    inputs, called on the inputs' CUDA device); returns its OpOverload."""
    if "triton" not in spec.kernels:
        raise ValueError(f"the spec of {spec.name} does not list a Triton kernel (OpSpec.kernels)")

    def checked(*args):
        if spec.check is not None:
            spec.check(*args)
        with device_guard(_first_tensor(args)):
            return impl(*args)

    return _define(spec, spec.triton_name, checked, ("cuda", "cpu"), "triton")


def define_python(spec: OpSpec, impl: Callable) -> Callable:
    """Define torch.ops.tskd_fast.<name> from `spec` (kernels=("python",)) and `impl`, an op written
    in Python over other ops: the spec's check, and its value check on tensors whose values may
    be read (common.values_readable), run before impl; the fake kernel and the autograd formula
    are the spec's, the backward op the spec's backward_op. The one op of every backend; returns
    its OpOverload."""
    if spec.kernels != ("python",):
        raise ValueError(f"the spec of {spec.name} does not say it is written in Python (OpSpec.kernels)")

    def checked(*args):
        if spec.check is not None:
            spec.check(*args)
        if spec.check_values is not None and values_readable(_first_tensor(args)):
            spec.check_values(*args)
        return impl(*args)

    return _define(spec, spec.name, checked, None, "python")


def _mutated_args(spec: OpSpec) -> tuple[str, ...]:
    """The arguments the spec's schema writes in place (`Tensor(a!) x`), as custom_op's
    mutates_args."""
    parsed = torch._C.parse_schema(f"{spec.qualname}{spec.schema}")
    return tuple(a.name for a in parsed.arguments if a.alias_info is not None and a.alias_info.is_write)


def _define(spec: OpSpec, name: str, checked: Callable, device_types, backend: str) -> Callable:
    """torch.ops.tskd_fast.<name> from the spec's schema running `checked`, with the spec's fake
    kernel and autograd formula (its backward op taken from `backend`); its OpOverload."""
    checked.__name__ = name
    op = torch.library.custom_op(
        f"tskd_fast::{name}",
        checked,
        mutates_args=_mutated_args(spec),
        device_types=device_types,
        schema=spec.schema,
    )
    op.register_fake(_checked_fake(spec))
    if spec.autograd is not None:
        formula = spec.autograd
        backward_op = formula.backward_op

        def setup_context(ctx, inputs, output):
            ctx.backward_op = op_for(backend, backward_op) if backward_op else None
            formula.setup_context(ctx, inputs, output)

        op.register_autograd(formula.backward, setup_context=setup_context)
    elif not spec.differentiable:
        op.register_autograd(_no_gradient, setup_context=_outputs_without_gradient)
    overload = getattr(torch.ops.tskd_fast, name).default
    _OPS[(backend, spec.name)] = overload
    return overload


def define_triton_ops() -> None:
    """Define the Triton op of every declared spec now, as its first use would (importing its
    family's tskd_fast.ops.triton module; needs triton). A first use inside torch.compile's tracing
    would trace that definition and break the graph there: compiled steps call this first."""
    for family in sorted({spec.family for spec in SPECS.values()}):
        importlib.import_module(f"tskd_fast.ops.triton.{family}")


def _outputs_without_gradient(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(*(output if isinstance(output, tuple) else (output,)))
    ctx.num_inputs = len(inputs)


def _no_gradient(ctx, *grads):
    return (None,) * ctx.num_inputs


def op_for(backend: str, name: str) -> Callable:
    """The op `name` of a resolved backend ("cpu", "cuda" or "triton"; an op written in Python is
    the same op for all)."""
    key = (backend, name)
    op = _OPS.get(key)
    if op is None:
        spec = SPECS[name]
        if spec.kernels == ("python",):
            op = _OPS[("python", name)]
        elif backend == "triton":
            if "triton" not in spec.kernels:
                raise ValueError(f"{name} has no Triton op")
            importlib.import_module(f"tskd_fast.ops.triton.{spec.family}")  # defines it
            op = _OPS[key]
        else:
            op = getattr(torch.ops.tskd_fast, name).default
        _OPS[key] = op
    return op


def _eager_function(spec: OpSpec) -> type[torch.autograd.Function]:
    """An autograd.Function whose apply(op, backward_op, *args) runs op below autograd and records
    the spec's formula: the registered one, without torch.library's per-call argument rebuilding."""
    formula = spec.autograd

    def forward(ctx, op, backward_op, *args):
        with torch._C._AutoDispatchBelowAutograd():  # straight to the device kernel
            out = op(*args)
        ctx.backward_op = backward_op
        formula.setup_context(ctx, args, out)
        return out

    def backward(ctx, *grads):
        needs = ctx.needs_input_grad
        try:
            ctx.needs_input_grad = needs[2:]
            grads_in = formula.backward(ctx, *grads)
        finally:
            ctx.needs_input_grad = needs
        return (None, None, *grads_in[: len(needs) - 2])

    function = type(
        f"Eager_{spec.name}",
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward)},
    )
    if "Tensor[]" in spec.schema:
        function = supports_tensorlist(function)
    return function


def _wants_grad(args) -> bool:
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.requires_grad:
                return True
        elif isinstance(a, list) and any(isinstance(t, torch.Tensor) and t.requires_grad for t in a):
            return True
    return False


def _eager_entry(name: str) -> Callable | None:
    """tskd_fast._C.<name>, the C++ op's eager entry point (csrc/python/eager_calls.h), or None."""
    module = _extension.extension()
    return getattr(module, name, None) if module is not None else None


_ENTRIES: dict[str, Callable | None] = {}


def call(spec: OpSpec, backend: str, args: tuple):
    """spec's op of `backend` on the tuple `args`. An eager call of a C++ op takes its entry point in
    tskd_fast._C (autograd is C++ too, so the call and its backward never enter Python again); an
    eager Triton call that needs a gradient takes the light autograd.Function; a traced call
    (torch.compile, export, opcheck) the op itself with its registered autograd."""
    if torch.compiler.is_compiling() or spec.kernels == ("python",):
        return op_for(backend, spec.name)(*args)
    if backend != "triton":
        entry = _ENTRIES.get(spec.name, False)
        if entry is False:
            entry = _ENTRIES[spec.name] = _eager_entry(spec.name)
        if entry is not None:
            out = entry(*args)
            if out is not None:  # None: arguments with __torch_function__, for torch.ops
                return out
        return op_for(backend, spec.name)(*args)
    op = op_for(backend, spec.name)
    if spec.autograd is None:
        return op(*args)
    if not (torch.is_grad_enabled() and _wants_grad(args)):
        with torch._C._AutoDispatchBelowAutograd():  # nothing to record: skip the autograd wrapper
            return op(*args)
    function = _EAGER.get(spec.name)
    if function is None:
        function = _EAGER[spec.name] = _eager_function(spec)
    backward_op = op_for(backend, spec.autograd.backward_op) if spec.autograd.backward_op else None
    return function.apply(op, backward_op, *args)
