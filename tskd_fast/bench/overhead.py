"""``tskd-fast bench --overhead``: the host's cost of one fused call, against eager PyTorch and the
floor of autograd itself.

Each family runs forward + backward on tiny tensors (its ``overhead`` shape), where the arithmetic
is nothing: what remains is what every training step pays on the host before a kernel runs (on a
GPU at CIFAR shapes, nearly the whole cost of a loss). The floor is ``x.sum().backward()`` on the
same tensors: for every input x of the call that takes a gradient a ``x.sum()``, all of them
backpropagated in one ``torch.autograd.backward`` (for the KD loss, one input: exactly
``student.sum().backward()``). That is one trivial op per input and one trip through the autograd
engine that delivers the same gradients, which no op can undercut. The fused call, the eager
reference and the floor are timed in one run, alternately (tskd_fast.bench.timing.measure), and
reported in microseconds and as multiples of the floor. The target of the op layer: at most
TARGET_VS_FLOOR times the floor, and below eager.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tskd_fast.bench.cases import FAMILIES, Family, Inputs, forward_backward
from tskd_fast.bench.timing import Plan, measure, warm_up

TARGET_VS_FLOOR = 1.5


@dataclass(frozen=True)
class OverheadRow:
    """One family on one device: medians in microseconds per forward + backward."""

    op: str
    shape: str
    device: str
    backend: str
    floor_us: float
    fused_us: float
    eager_us: float

    @property
    def fused_vs_floor(self) -> float:
        return self.fused_us / self.floor_us

    @property
    def eager_vs_floor(self) -> float:
        return self.eager_us / self.floor_us

    @property
    def met(self) -> bool:
        return self.fused_vs_floor <= TARGET_VS_FLOOR and self.fused_us < self.eager_us


def floor_call(inputs: Inputs):
    """x.sum().backward() on every input that takes a gradient (inputs.leaves), in one backward."""
    leaves = inputs.leaves

    def run() -> None:
        for x in leaves:
            x.grad = None
        torch.autograd.backward([x.sum() for x in leaves])

    return run


def measure_family(family: Family, device: torch.device, backend: str, plan: Plan) -> OverheadRow:
    """The family's fused call (`backend`), its eager reference and the floor, timed alternately."""
    shape = family.overhead
    inputs = family.make_inputs(shape, device, torch.float32)
    fns = {
        "floor": floor_call(inputs),
        "fused": forward_backward(family.fused(backend), inputs),
        "eager": forward_backward(family.reference, inputs),
    }
    call_ms, failed = warm_up(fns, device, plan.warmup)
    if failed:
        raise RuntimeError(f"{family.name}: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    stats = measure(fns, device, plan, call_ms)
    return OverheadRow(
        op=family.name,
        shape=shape.label,
        device=device.type,
        backend=backend,
        floor_us=stats["floor"].median * 1e3,
        fused_us=stats["fused"].median * 1e3,
        eager_us=stats["eager"].median * 1e3,
    )


def run_overhead(devices: list[torch.device], names: list[str], plan: Plan) -> list[OverheadRow]:
    """Every family with an overhead shape among `names`, on every device, with the backend "auto"
    picks there (the C++ kernels on the CPU; on CUDA the CUDA kernels, else Triton)."""
    from tskd_fast.ops import resolve_backend

    rows = []
    for device in devices:
        backend = resolve_backend("auto", device)
        for name in names:
            family = FAMILIES[name]
            if family.overhead is not None and family.available():
                rows.append(measure_family(family, device, backend, plan))
    return rows


def overhead_table(rows: list[OverheadRow]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| op | shape | device | backend | floor µs | fused µs | fused / floor | eager µs | eager / floor | "
        f"≤ {TARGET_VS_FLOOR}x floor and < eager |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.op} | {r.shape} | {r.device} | {r.backend} | {r.floor_us:.1f} | {r.fused_us:.1f} | "
            f"{r.fused_vs_floor:.2f}x | {r.eager_us:.1f} | {r.eager_vs_floor:.2f}x | {'met' if r.met else 'MISSED'} |"
        )
    return "\n".join(lines)


def overhead_json(rows: list[OverheadRow]) -> list[dict]:
    return [
        {
            "op": r.op,
            "shape": r.shape,
            "device": r.device,
            "backend": r.backend,
            "floor_us": round(r.floor_us, 2),
            "fused_us": round(r.fused_us, 2),
            "eager_us": round(r.eager_us, 2),
            "fused_vs_floor": round(r.fused_vs_floor, 3),
            "eager_vs_floor": round(r.eager_vs_floor, 3),
            "met": r.met,
        }
        for r in rows
    ]
