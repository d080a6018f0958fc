"""Timing that holds on a noisy shared machine: implementations alternate round by round.

Every implementation of a case is warmed up (compiled, caches filled) before any of them is
timed, and then each round times each implementation once, in an order drawn afresh each round
(seeded), so a slow period of the machine lands on all of them alike and no implementation
always runs after the same one: what runs before a call (a copy that leaves the caches full of
dirty lines, an eager baseline that maps and unmaps hundreds of MiB) changed a memory-bound
call's time by up to 1.8x on the development machine. Inductor's pool of
compile workers is held to one in-process thread so that nothing compiles beside timed code.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def quiet_compile_workers() -> None:
    """Keep inductor from starting a pool of compile worker processes (they would share the cores
    with the timed code). Must run before the first torch.compile call of the process."""
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        config.compile_threads = 1


@dataclass(frozen=True)
class Stats:
    """Per-call time in milliseconds over `samples` samples of `inner` calls each; `values` are the
    samples in the order they were taken (round by round in `measure`)."""

    median: float
    p20: float
    p80: float
    samples: int
    inner: int
    values: tuple[float, ...] = ()


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of an ascending list."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summarize(samples_ms: list[float], inner: int = 1) -> Stats:
    ordered = sorted(samples_ms)
    return Stats(
        percentile(ordered, 0.5),
        percentile(ordered, 0.2),
        percentile(ordered, 0.8),
        len(ordered),
        inner,
        tuple(samples_ms),
    )


def paired_ratios(numerator: Stats, denominator: Stats) -> Stats:
    """Round by round, numerator's sample over denominator's (two implementations timed in the
    same rounds of `measure`), summarised: a ratio from neighbouring samples, which a slow period
    of a shared machine moves less than it moves a ratio of two medians."""
    if len(numerator.values) != len(denominator.values) or not numerator.values:
        raise ValueError("paired_ratios needs two Stats of the same rounds, with their values")
    return summarize([n / d for n, d in zip(numerator.values, denominator.values)])


class CacheFlusher:
    """Evicts the caches between calls for cold-cache timing by writing a buffer twice the size of
    the last-level cache (the GPU's L2 on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.buffer = torch.empty(2 * last_level_cache_bytes(device) // 4, dtype=torch.float32, device=device)

    def __call__(self) -> None:
        self.buffer.zero_()


def last_level_cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20))
    best = 0
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(root):
            with open(os.path.join(root, entry, "size")) as f:
                text = f.read().strip()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return best or (64 << 20)


class Timer:
    """Times `calls` calls of fn: on the CPU perf_counter, or with `thread_time` the calling
    thread's CPU time (time.thread_time: what the host spends on the calls, without the time other
    processes of a shared machine hold the core); CUDA events on the GPU."""

    def __init__(self, device: torch.device, thread_time: bool = False) -> None:
        self.cuda = device.type == "cuda"
        self.clock = time.thread_time if thread_time else time.perf_counter

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object], calls: int) -> float:
        """Milliseconds per call."""
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / calls
        begin = self.clock()
        for _ in range(calls):
            fn()
        return (self.clock() - begin) * 1e3 / calls


@dataclass(frozen=True)
class Plan:
    """How long to measure: `warmup` calls each, then rounds until `repeat` rounds are done or
    `max_seconds` have passed (at least `min_repeat` rounds); samples last at least
    `min_sample_ms` (several calls per sample for fast calls); `cold` flushes the caches before
    each single-call sample; `thread_time` times CPU calls by the calling thread's CPU time
    (Timer)."""

    warmup: int = 3
    repeat: int = 20
    min_repeat: int = 5
    max_seconds: float = 10.0
    min_sample_ms: float = 0.2
    cold: bool = False
    thread_time: bool = False


def warm_up(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Run each fn `warmup` (>= 1) times. Returns ({name: ms of the last warm-up call},
    {name: one-line error} for those that raised, e.g. a dtype a backend does not support)."""
    timer = Timer(device)
    times, failed = {}, {}
    for name, fn in fns.items():
        try:
            for _ in range(max(1, warmup) - 1):
                fn()
            timer.sync()
            times[name] = timer(fn, 1)
        except Exception as error:  # noqa: BLE001  (reported per implementation, not fatal)
            first_line = (str(error).strip().splitlines() or [""])[0]
            failed[name] = f"{type(error).__name__}: {first_line}"[:200]
    return times, failed


def measure(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    plan: Plan,
    call_ms: dict[str, float] | None = None,
) -> dict[str, Stats]:
    """Alternating measurement of already warmed-up fns; call_ms (from warm_up) sizes the samples."""
    names = list(fns)
    timer = Timer(device, plan.thread_time)
    flush = CacheFlusher(device) if plan.cold else None
    inner = {}
    for name in names:
        estimate = max((call_ms or {}).get(name, plan.min_sample_ms), 1e-3)
        inner[name] = 1 if plan.cold else max(1, math.ceil(plan.min_sample_ms / estimate))
    samples: dict[str, list[float]] = {name: [] for name in names}
    began = time.perf_counter()
    order = random.Random(0)
    for round_ in range(plan.repeat):
        for name in order.sample(names, len(names)):
            if flush is not None:
                flush()
                timer.sync()
            samples[name].append(timer(fns[name], inner[name]))
        if round_ + 1 >= plan.min_repeat and time.perf_counter() - began > plan.max_seconds:
            break
    return {name: summarize(samples[name], inner[name]) for name in names}
