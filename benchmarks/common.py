"""Timing and peak-memory helpers of the stand-alone benchmark scripts: thin wrappers over the
alternating harness of `tskd-fast bench` (tskd_fast.bench.timing, .memory, .bandwidth), so the
scripts and the CLI measure the same way."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tskd_fast.bench.bandwidth import copy_bandwidth as _copy_bandwidth
from tskd_fast.bench.memory import peak_memory_bytes as _peak_memory_bytes
from tskd_fast.bench.timing import Plan, measure, warm_up


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_alternating(
    fns: dict[str, Callable[[], object]], device: str = "cpu", warmup: int = 3, repeat: int = 20
) -> dict[str, dict[str, float]]:
    """{name: {"median", "p20", "p80"}} in ms per call, the fns called in turn within every round
    (in an order drawn afresh each round), after `warmup` calls of each."""
    dev = torch.device(device)
    call_ms, failed = warm_up(fns, dev, warmup)
    if failed:
        raise RuntimeError("; ".join(f"{name}: {error}" for name, error in failed.items()))
    plan = Plan(repeat=repeat, min_repeat=min(5, repeat), max_seconds=float("inf"))
    stats = measure(fns, dev, plan, call_ms)
    return {name: {"median": s.median, "p20": s.p20, "p80": s.p80} for name, s in stats.items()}


def time_call(fn: Callable[[], object], device: str = "cpu", warmup: int = 3, repeat: int = 20) -> dict:
    """Median and 20th/80th percentile wall time of fn() in milliseconds."""
    return time_alternating({"fn": fn}, device, warmup, repeat)["fn"]


def peak_memory_bytes(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak of the bytes allocated by fn() above what was allocated before it."""
    return _peak_memory_bytes(fn, torch.device(device))


def copy_bandwidth(device: str = "cpu", buffer_bytes: int = 256 * 2**20, repeat: int = 10) -> float:
    """GB/s of a large tensor copy (read + write), measured like the CLI's."""
    return _copy_bandwidth(torch.device(device), buffer_bytes, repeat).gbps
