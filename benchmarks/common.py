"""Timing and peak-memory helpers of the stand-alone benchmark scripts (`tskd-fast bench` has its own,
alternating harness in tskd_fast.bench)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: str = "cpu", warmup: int = 3, repeat: int = 20) -> dict:
    """Median and 20th/80th percentile wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return {
        "median": statistics.median(samples),
        "p20": samples[int(0.2 * (len(samples) - 1))],
        "p80": samples[int(0.8 * (len(samples) - 1))],
    }


def peak_memory_bytes(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak of the bytes allocated by fn() above what was allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    # On the CPU the profiler's memory events give every allocation and free in order.
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak
