"""The machine's copy bandwidth, measured in the same run as the ops it is compared with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tskd_fast.bench.timing import Plan, measure, warm_up


@dataclass(frozen=True)
class Bandwidth:
    """Copy bandwidth in GB/s (10^9 bytes), counting the bytes read and the bytes written."""

    gbps: float
    buffer_bytes: int
    median_ms: float


def copy_step(device: torch.device, buffer_bytes: int) -> tuple[Callable[[], object], int]:
    """dst.copy_(src) of a float32 buffer of about buffer_bytes on `device`, and the bytes one
    call moves (read + write)."""
    n = buffer_bytes // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * n * 4


def gbps(moved_bytes: int, ms: float) -> float:
    return moved_bytes / (ms * 1e-3) / 1e9


def copy_bandwidth(device: torch.device, buffer_bytes: int, repeat: int = 10) -> Bandwidth:
    """dst.copy_(src) of a buffer far larger than the caches (a device-to-device copy on CUDA,
    all of torch's threads on the CPU): 2 * buffer_bytes per copy over the median copy time."""
    step, moved = copy_step(device, buffer_bytes)
    copy = {"copy": step}
    call_ms, failed = warm_up(copy, device, warmup=2)
    if failed:
        raise RuntimeError(f"copy bandwidth measurement failed: {failed['copy']}")
    stats = measure(copy, device, Plan(repeat=repeat, min_repeat=3, max_seconds=5.0), call_ms)["copy"]
    return Bandwidth(gbps(moved, stats.median), moved // 2, stats.median)
