"""pytest-benchmark suite of the KD loss: `pytest benchmarks --benchmark-only`.

Each shape is timed for the eager reference, torch.compile of it, and the fused op, forward +
backward; compare the groups with pytest-benchmark's table (grouped by shape).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kd_loss_cases import SHAPES, forward_backward, implementations, make_inputs  # noqa: E402

IMPLS = implementations("cpu")


@pytest.mark.parametrize("rows,classes", SHAPES, ids=[f"{b}x{c}" for b, c in SHAPES])
@pytest.mark.parametrize("name", list(IMPLS))
def test_kd_loss_forward_backward(benchmark, rows, classes, name):
    benchmark.group = f"kd_loss {rows}x{classes}"
    student, teacher, _ = make_inputs(rows, classes, "cpu")
    step = forward_backward(IMPLS[name], student, teacher)
    step()  # compile / warm up outside the timing
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    assert student.grad is not None
