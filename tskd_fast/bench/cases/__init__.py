"""What the benchmarks time: one `Family` per fused op, in one small file each.

A family names the op (`tskd_fast.functional.<functional>`), its shapes (a few flagged for
``--quick``), how to build seeded inputs, the eager reference it is compared with (whose
``torch.compile`` is the second baseline), how to call the fused op with a given backend, and its
minimal-bytes model (the bytes a perfect kernel would move for one forward + backward). The CLI
(`tskd-fast bench`) and the pytest-benchmark suites in ``benchmarks/`` both read `FAMILIES`.

Adding an op to the bench is one file here that defines ``FAMILY`` and one line in `_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tskd_fast import functional as tf_functional
from tskd_fast import reference as tf_reference


@dataclass(frozen=True)
class Shape:
    """One benchmarked size: ``label`` as printed ("4096x1000"), ``dims`` for the family's code.

    device: only on that device type ("cuda") when set. dtype: always in that dtype ("bfloat16"),
    whatever ``--dtype`` asks, when set (e.g. an LLM-vocabulary shape that only makes sense in bf16).
    """

    label: str
    dims: tuple
    quick: bool = False
    device: str | None = None
    dtype: str | None = None

    def runs_on(self, device: torch.device) -> bool:
        return self.device is None or self.device == device.type

    def dtypes(self, requested: Sequence[str]) -> list[str]:
        return [self.dtype] if self.dtype is not None else list(requested)


@dataclass
class Inputs:
    """Seeded inputs of one call: the op's positional ``args``; ``grads`` the upstream gradients
    for ops that return tensors (None: the op returns a scalar loss); ``leaves`` the tensors whose
    ``.grad`` the backward pass writes (reset before each call)."""

    args: tuple[Any, ...]
    grads: tuple[torch.Tensor, ...] | None
    leaves: tuple[torch.Tensor, ...]


OpFn = Callable[..., Any]


@dataclass(frozen=True)
class Target:
    """A speed target set by the op's issue for its fused CPU kernel in float32: at least
    ``vs_eager`` / ``vs_compile`` times faster than the baselines and (when set) ``bw_share`` of
    the measured copy bandwidth, at the shape labelled ``shape`` (None: every shape)."""

    vs_eager: float
    vs_compile: float
    bw_share: float | None = None
    shape: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Family:
    """A fused op and what it is compared with.

    name: the ``--ops`` name. functional: the function of tskd_fast.functional (and of
    tskd_fast.reference when ``needs_reference``) that must exist for the family to run.
    reference: the eager baseline, called with the same args as the fused op.
    fused: backend -> the fused call (same args). minimal_bytes: (shape, dtype) -> bytes moved by
    one forward + backward in the minimal-bytes model described by ``bytes_doc``.
    extra_baselines: device -> {name: fn} further comparisons (e.g. the DistillKL module, Liger).
    targets: the speed targets of the op's issue (checked by the CLI on the CPU rows).
    overhead: the tiny shape of ``tskd-fast bench --overhead``, where the arithmetic is nothing and
    the time is the host's cost of a call (tskd_fast.bench.overhead).
    """

    name: str
    title: str
    functional: str
    shapes: tuple[Shape, ...]
    make_inputs: Callable[[Shape, torch.device, torch.dtype], Inputs]
    reference: OpFn
    fused: Callable[[str], OpFn]
    minimal_bytes: Callable[[Shape, torch.dtype], int]
    bytes_doc: str
    needs_reference: str | None = None
    extra_baselines: Callable[[torch.device, torch.dtype], dict[str, OpFn]] = field(
        default=lambda device, dtype: {}
    )
    targets: tuple[Target, ...] = ()
    overhead: Shape | None = None

    def available(self) -> bool:
        """Whether this build has the op (and its reference)."""
        ref_name = self.needs_reference or self.functional
        return hasattr(tf_functional, self.functional) and hasattr(tf_reference, ref_name)

    def shapes_for(self, quick: bool, device: torch.device | None = None) -> list[Shape]:
        """The shapes of a run (``--quick``: the flagged ones) that run on ``device`` (any: None)."""
        shapes = [s for s in self.shapes if s.quick] if quick else list(self.shapes)
        return [s for s in shapes if device is None or s.runs_on(device)]


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def generator(*dims: int) -> torch.Generator:
    """A CPU generator seeded by the shape, so every run and provider sees the same inputs."""
    seed = 0
    for d in dims:
        seed = (seed * 1_000_003 + d) % (2**62)
    return torch.Generator().manual_seed(seed)


def randn(shape: Sequence[int], gen: torch.Generator, device, dtype, scale: float = 1.0, grad=False):
    """Normal values drawn on the CPU (device-independent) then moved; optionally a grad leaf."""
    t = torch.randn(*shape, generator=gen).mul_(scale).to(device=device, dtype=dtype)
    return t.requires_grad_(grad)


def forward_backward(fn: OpFn, inputs: Inputs, reset_grad: bool = True) -> Callable[[], None]:
    """One forward + backward of fn on inputs. reset_grad=False leaves clearing the leaves' grads
    to the caller (peak-memory measurement, which must not count freeing the previous gradient)."""

    def run() -> None:
        if reset_grad:
            for leaf in inputs.leaves:
                leaf.grad = None
        out = fn(*inputs.args)
        if inputs.grads is None:
            out.backward()
        else:
            outs = out if isinstance(out, tuple | list) else (out,)
            torch.autograd.backward(tuple(outs), inputs.grads)

    return run


_MODULES = ("kd_loss", "dtd", "convlstm", "abf", "hcl")


def _load() -> dict[str, Family]:
    found = {}
    for module in _MODULES:
        family = importlib.import_module(f"{__name__}.{module}").FAMILY
        found[family.name] = family
    return found


FAMILIES: dict[str, Family] = _load()

__all__ = [
    "FAMILIES",
    "Family",
    "Inputs",
    "Shape",
    "Target",
    "element_size",
    "forward_backward",
    "generator",
    "randn",
]
