"""One op case (family, shape, device, dtype): every implementation timed in one alternating run."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch

from tskd_fast.bench.bandwidth import copy_step, gbps
from tskd_fast.bench.cases import Family, Shape, forward_backward
from tskd_fast.bench.memory import peak_memory_bytes
from tskd_fast.bench.timing import Plan, measure, warm_up
from tskd_fast.ops import _extension
from tskd_fast.ops.backend import triton_available

EAGER = "eager"
COMPILE = "compile"
COPY = "copy"


@dataclass
class Result:
    """One row of the op table. speedup_* = baseline median / this median (> 1: faster than it);
    gbps on the family's minimal-bytes model; copy_gbps the copy bandwidth timed in the same
    rounds as the case (see run_case), bw_share = gbps / copy_gbps."""

    op: str
    shape: str
    dtype: str
    device: str
    backend: str
    kind: str
    median_ms: float
    p20_ms: float
    p80_ms: float
    samples: int
    speedup_eager: float | None
    speedup_compile: float | None
    gbps: float
    bw_share: float | None
    peak_mib: float | None
    copy_gbps: float | None = None
    tflops: float | None = None


def fused_backends(device: torch.device) -> tuple[list[str], str]:
    """The fused backends that run on `device`, and why there are none when the list is empty."""
    if device.type == "cpu":
        return (["cpu"], "") if _extension.has_cpu_kernels() else ([], _extension.why_unavailable())
    found = []
    if _extension.has_cuda_kernels():
        found.append("cuda")
    if triton_available():
        found.append("triton")
    why = "" if found else "tskd_fast._C has no CUDA kernels and triton is not installed"
    return found, why


def implementations(family: Family, device: torch.device, dtype: torch.dtype, compile_baseline: bool) -> dict:
    """name -> (kind, fn(*args)): the fused backends first, then the baselines."""
    impls = {backend: ("fused", family.fused(backend)) for backend in fused_backends(device)[0]}
    impls[EAGER] = ("baseline", family.reference)
    if compile_baseline and family.compile_reference:
        # A fresh Dynamo cache per case: no recompile limit is reached over many shapes and dtypes.
        torch._dynamo.reset()
        impls[COMPILE] = ("baseline", torch.compile(family.reference, dynamic=False))
    for name, fn in family.extra_baselines(device, dtype).items():
        impls[name] = ("baseline", fn)
    return impls


def run_case(
    family: Family,
    shape: Shape,
    device: torch.device,
    dtype: torch.dtype,
    plan: Plan,
    copy_bytes: int | None,
    compile_baseline: bool = True,
    with_memory: bool = True,
) -> tuple[list[Result], list[str]]:
    """Time every implementation of one case; returns the rows and one-line notes (failures).

    With copy_bytes, a dst.copy_(src) of a buffer that size takes its turn in every round beside
    the implementations, and each row's bw_share is over that copy's bandwidth: on a shared
    machine whose bandwidth drifts by a third from minute to minute, a copy timed minutes apart
    from the op would make the share a measure of the drift."""
    dtype_name = str(dtype).removeprefix("torch.")
    where = f"{family.name} {shape.label} {dtype_name} {device.type}"
    inputs = family.make_inputs(shape, device, dtype)
    impls = implementations(family, device, dtype, compile_baseline)
    steps = {name: forward_backward(fn, inputs) for name, (_, fn) in impls.items()}
    copy_fns, copy_moved = {}, 0
    if copy_bytes:
        copy_fns[COPY], copy_moved = copy_step(device, copy_bytes)
    call_ms, failed = warm_up({**steps, **copy_fns}, device, plan.warmup)
    notes = [f"{where}: {name} failed: {why}" for name, why in failed.items()]
    steps = {name: step for name, step in steps.items() if name not in failed}
    if not steps:
        return [], notes
    stats = measure(
        {**steps, **{k: v for k, v in copy_fns.items() if k not in failed}}, device, plan, call_ms
    )
    copy_stats = stats.pop(COPY, None)
    copy_gbps = gbps(copy_moved, copy_stats.median) if copy_stats else None
    del copy_fns  # its buffers, before the peak-memory calls
    peaks: dict[str, float | None] = {}
    for name in steps:
        peaks[name] = None
        if with_memory:
            for leaf in inputs.leaves:
                leaf.grad = None
            peaks[name] = (
                peak_memory_bytes(forward_backward(impls[name][1], inputs, reset_grad=False), device) / 2**20
            )
    nbytes = family.minimal_bytes(shape, dtype)
    rows = []
    for name, s in stats.items():
        op_gbps = gbps(nbytes, s.median)
        rows.append(
            Result(
                op=family.name,
                shape=shape.label,
                dtype=dtype_name,
                device=device.type,
                backend=name,
                kind=impls[name][0],
                median_ms=s.median,
                p20_ms=s.p20,
                p80_ms=s.p80,
                samples=s.samples,
                speedup_eager=stats[EAGER].median / s.median if EAGER in stats else None,
                speedup_compile=stats[COMPILE].median / s.median if COMPILE in stats else None,
                gbps=op_gbps,
                bw_share=op_gbps / copy_gbps if copy_gbps else None,
                peak_mib=peaks[name],
                copy_gbps=copy_gbps,
                tflops=family.flops(shape, dtype) / (s.median * 1e9) if family.flops else None,
            )
        )
    del inputs, steps, impls
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, notes
