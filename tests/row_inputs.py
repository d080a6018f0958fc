"""Inputs of the row ops' tests (kd_loss, dtd) and the checks of the Triton kernels' value flag
that both families make."""

import pytest
import torch

from tests.conftest import CHECK_OPS, CountOps


def opmath(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def logits(rows, classes, device, dtype=torch.float32, spread=3.0):
    return (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=device, dtype=dtype)


def labels(teacher, ignore_index=-100):
    """Labels with ignored rows, rows the teacher gets right and rows it gets wrong."""
    rows, classes = teacher.shape
    target = torch.randint(0, classes, (rows,), device=teacher.device)
    if rows > 2:
        target[::4] = ignore_index
        right = torch.arange(1, rows, 3, device=teacher.device)
        target[right] = teacher[right].float().argmax(dim=1)
    return target


def row_sample(device, rows=6, classes=9):
    """student, teacher (rows, classes), target (the first row ignored) and temperatures."""
    student = torch.randn(rows, classes, device=device) * 2
    teacher = torch.randn(rows, classes, device=device) * 2
    target = torch.randint(0, classes, (rows,), device=device)
    target[0] = -100
    tau = torch.rand(rows, device=device) * 3 + 0.5
    return student, teacher, target, tau


def assert_no_separate_value_checks(call):
    """call() (a valid Triton call in the interpreter) runs ATen ops, none of them a host check of
    the values: the kernel checks them."""
    with CountOps() as ops:
        call()
    assert ops.names, "the op ran no aten op at all: the mode saw nothing"
    assert not CHECK_OPS & set(ops.names), ops.names


def assert_searched_only_when_flagged(monkeypatch, module, valid_call, bad_call, message):
    """With the module's host search (name_bad_value) stubbed out, valid_call() never reaches it
    and bad_call() still fails, with the fallback `message`."""
    calls = []
    monkeypatch.setattr(module, "name_bad_value", lambda *args: calls.append(args))
    valid_call()
    assert calls == []
    with pytest.raises(RuntimeError, match=message):
        bad_call()
    assert len(calls) == 1


def device_flag_message(monkeypatch, launch, op, what):
    """The message of the one _assert_async that launch.raise_if_flagged makes for a flag whose
    values cannot be read (like CUDA's): the host search is never run."""
    asserted = []
    monkeypatch.setattr(torch, "_assert_async", lambda flag, message: asserted.append((flag, message)))
    flag = torch.ones((1,), dtype=torch.int32, device="meta")

    def never_called():
        raise AssertionError("the host search ran for a device flag")

    launch.raise_if_flagged(flag, op, what, never_called)
    assert [f is flag for f, _ in asserted] == [True]
    return asserted[0][1]
