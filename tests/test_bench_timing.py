"""The bench's measurement: percentiles, alternation, warm-up failures, compile workers, copy
bandwidth and peak memory."""

import os
import sys
import time

import pytest
import torch

from tskd_fast.bench.bandwidth import copy_bandwidth
from tskd_fast.bench.memory import peak_memory_bytes
from tskd_fast.bench.timing import (
    Plan,
    measure,
    paired_ratios,
    percentile,
    quiet_compile_workers,
    summarize,
    warm_up,
)

CPU = torch.device("cpu")


def test_percentiles_interpolate_between_samples():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert percentile(values, 0.5) == pytest.approx(3.5)
    assert percentile(values, 0.2) == pytest.approx(2.0)
    assert percentile(values, 0.8) == pytest.approx(5.0)
    assert percentile([7.0], 0.8) == 7.0
    stats = summarize([5.0, 1.0, 3.0, 2.0, 4.0], inner=4)
    assert (stats.median, stats.p20, stats.p80, stats.samples, stats.inner) == (3.0, 1.8, 4.2, 5, 4)
    assert stats.values == (5.0, 1.0, 3.0, 2.0, 4.0)  # in the order taken


def test_paired_ratios_divide_round_by_round():
    # A slow period (rounds 3 and 4) moves both alike: every round's ratio is 2.
    slow = summarize([2.0, 2.2, 8.0, 9.0, 2.1])
    fast = summarize([1.0, 1.1, 4.0, 4.5, 1.05])
    paired = paired_ratios(slow, fast)
    assert paired.values == pytest.approx((2.0,) * 5) and paired.median == pytest.approx(2.0)
    # Rounds are paired in order, not by rank.
    assert paired_ratios(summarize([1.0, 3.0]), summarize([2.0, 1.0])).values == (0.5, 3.0)
    with pytest.raises(ValueError, match="same rounds"):
        paired_ratios(slow, summarize([1.0]))


def test_thread_time_counts_the_threads_cpu_time_not_the_wait():
    """The overhead bench's CPU clock: a call that waits (as a call does while other processes of
    a shared machine hold the core) costs wall time but almost no CPU time."""

    def wait():
        time.sleep(0.02)

    wall = measure({"wait": wait}, CPU, Plan(repeat=3, min_repeat=3, min_sample_ms=0.0), {"wait": 20.0})
    cpu = measure(
        {"wait": wait}, CPU, Plan(repeat=3, min_repeat=3, min_sample_ms=0.0, thread_time=True), {"wait": 20.0}
    )
    assert wall["wait"].median >= 19.0
    assert cpu["wait"].median < 5.0


def test_each_round_times_every_implementation_once_in_a_fresh_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    plan = Plan(repeat=12, min_repeat=1, max_seconds=60.0, min_sample_ms=0.0)
    stats = measure(fns, CPU, plan, {name: 1.0 for name in fns})
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 12 and all(sorted(r) == list("abc") for r in rounds)
    # No implementation always follows the same one.
    before_a = {calls[i - 1] for i in range(1, len(calls)) if calls[i] == "a"}
    assert before_a == {"b", "c"}
    assert all(s.samples == 12 and s.inner == 1 for s in stats.values())
    # Seeded: a second run draws the same orders.
    again = []
    measure(
        {name: (lambda name=name: again.append(name)) for name in "abc"}, CPU, plan, {n: 1.0 for n in "abc"}
    )
    assert again == calls


def test_fast_calls_are_batched_into_longer_samples():
    calls = []
    plan = Plan(repeat=2, min_repeat=1, min_sample_ms=1.0)
    stats = measure({"fast": lambda: calls.append(1)}, CPU, plan, {"fast": 0.1})
    assert stats["fast"].inner == 10 and len(calls) == 20


def test_rounds_stop_after_max_seconds_but_not_before_min_repeat():
    import time

    plan = Plan(repeat=1000, min_repeat=3, max_seconds=0.0)
    stats = measure({"slow": lambda: time.sleep(0.002)}, CPU, plan, {"slow": 2.0})
    assert stats["slow"].samples == 3
    assert stats["slow"].median >= 2.0


def test_cold_cache_flushes_before_every_single_call(monkeypatch):
    from tskd_fast.bench import timing

    flushes = []
    monkeypatch.setattr(timing, "last_level_cache_bytes", lambda device: 1 << 16)
    monkeypatch.setattr(timing.CacheFlusher, "__call__", lambda self: flushes.append(self.buffer.numel()))
    plan = Plan(repeat=3, min_repeat=1, cold=True, min_sample_ms=5.0)
    stats = measure({"a": lambda: None, "b": lambda: None}, CPU, plan, {"a": 0.001, "b": 0.001})
    assert flushes == [2 * (1 << 16) // 4] * 6
    assert stats["a"].inner == 1


def test_warm_up_reports_failures_in_one_line():
    def broken():
        raise ValueError("float64 is not supported\nmore detail")

    times, failed = warm_up({"ok": lambda: None, "broken": broken}, CPU, warmup=2)
    assert set(times) == {"ok"} and times["ok"] >= 0
    assert failed == {"broken": "ValueError: float64 is not supported"}


def test_compile_workers_are_held_to_one_thread(monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "8")
    import torch._inductor.config as inductor_config

    # Not monkeypatch.setattr: inductor's config module hides an option that monkeypatch deletes
    # on undo (getattr does not see the option as set), which breaks every later torch.compile.
    before = inductor_config.compile_threads
    try:
        inductor_config.compile_threads = 8
        quiet_compile_workers()
        assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
        assert sys.modules["torch._inductor.config"].compile_threads == 1
    finally:
        inductor_config.compile_threads = before
    assert inductor_config.compile_threads == before


def test_copy_bandwidth_counts_read_and_write():
    bw = copy_bandwidth(CPU, buffer_bytes=8 << 20, repeat=3)
    assert bw.buffer_bytes == 8 << 20 and bw.median_ms > 0
    assert bw.gbps == pytest.approx(2 * bw.buffer_bytes / (bw.median_ms * 1e-3) / 1e9)


def test_cpu_peak_memory_sees_temporaries_and_outputs():
    kept = []

    def fn():
        tmp = torch.ones(1 << 20)  # 4 MiB, freed at return
        kept.append(torch.ones(1 << 18) + tmp[: 1 << 18])  # a 1 MiB temporary and 1 MiB kept

    assert peak_memory_bytes(fn, CPU) == 6 << 20
    assert peak_memory_bytes(lambda: None, CPU) == 0
