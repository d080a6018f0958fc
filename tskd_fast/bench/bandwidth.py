"""The machine's copy bandwidth, measured in the same run as the ops it is compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tskd_fast.bench.timing import Plan, measure, warm_up


@dataclass(frozen=True)
class Bandwidth:
    """Copy bandwidth in GB/s (10^9 bytes), counting the bytes read and the bytes written."""

    gbps: float
    buffer_bytes: int
    median_ms: float


def copy_bandwidth(device: torch.device, buffer_bytes: int, repeat: int = 10) -> Bandwidth:
    """dst.copy_(src) of a buffer far larger than the caches (a device-to-device copy on CUDA,
    all of torch's threads on the CPU): 2 * buffer_bytes per copy over the median copy time."""
    n = buffer_bytes // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    copy = {"copy": lambda: dst.copy_(src)}
    call_ms, failed = warm_up(copy, device, warmup=2)
    if failed:
        raise RuntimeError(f"copy bandwidth measurement failed: {failed['copy']}")
    stats = measure(copy, device, Plan(repeat=repeat, min_repeat=3, max_seconds=5.0), call_ms)["copy"]
    return Bandwidth(2 * n * 4 / (stats.median * 1e-3) / 1e9, n * 4, stats.median)
