"""tskd_fast::dtd_weight and dtd_temperature on every backend as PyTorch ops: opcheck, no gradient,
the temperatures against the reference formula, and the ops' own input checks; how the Triton op
checks labels (folded into the kernel: one error flag, named by the spec's value check on the CPU,
one asynchronous device assert on CUDA)."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.row_inputs import (
    assert_no_separate_value_checks,
    assert_searched_only_when_flagged,
    device_flag_message,
)
from tskd_fast.ops import op_for
from tskd_fast.reference.dtd import temperatures_from_weights

BACKENDS = kernel_backends()
TRITON = [b for b in BACKENDS if b == "triton"]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused backend built")

if TRITON:
    from tskd_fast.ops.triton import _launch
    from tskd_fast.ops.triton import dtd as triton_dtd


def sample(backend, rows=5, classes=11):
    device = device_of(backend)
    student = torch.randn(rows, classes, device=device) * 2
    teacher = torch.randn(rows, classes, device=device) * 2
    target = torch.randint(0, classes, (rows,), device=device)
    target[0] = -100
    return student, teacher, target


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode,ka", [(0, 0), (0, 1), (1, 0)])
def test_opcheck(backend, mode, ka):
    student, teacher, target = sample(backend)
    args = (student, teacher, target, mode, 2.0, ka, -100)
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(op_for(backend, "dtd_weight"), args, test_utils=utils)
    torch.library.opcheck(op_for(backend, "dtd_temperature"), (*args, 4.0, 1.0, 0.1), test_utils=utils)


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperatures_are_the_formula_of_the_weights_without_gradient(backend):
    student, teacher, target = sample(backend, 7, 13)
    student[3, 2] = float("nan")  # a row whose weight is not finite gets t0
    z = student.clone().requires_grad_(True)
    w = op_for(backend, "dtd_weight")(z, teacher, target, 0, 2.0, 1, -100)
    tau = op_for(backend, "dtd_temperature")(z, teacher, target, 0, 2.0, 1, -100, 4.0, 3.0, 0.5)
    assert not w.requires_grad and not tau.requires_grad
    torch.testing.assert_close(tau, temperatures_from_weights(w, 4.0, 3.0, 0.5))
    assert tau[3].item() == 4.0 and bool((tau >= 0.5).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_errors_name_the_argument(backend):
    weight_op, temperature_op = op_for(backend, "dtd_weight"), op_for(backend, "dtd_temperature")
    student, teacher, target = sample(backend)
    with pytest.raises(ValueError, match=r"mode must be 0 \(flsw\) or 1 \(cwsm\), got 2"):
        weight_op(student, teacher, target, 2, 2.0, 0, -100)
    with pytest.raises(ValueError, match="gamma must be finite and >= 0, got -1"):
        weight_op(student, teacher, target, 0, -1.0, 0, -100)
    with pytest.raises(ValueError, match="ka must be 0"):
        weight_op(student, teacher, target, 0, 2.0, 5, -100)
    with pytest.raises(ValueError, match="needs target labels"):
        weight_op(student, teacher, None, 0, 2.0, 1, -100)
    with pytest.raises(ValueError, match="teacher_logits must have the shape"):
        weight_op(student, teacher[:2], target, 0, 2.0, 0, -100)
    with pytest.raises(ValueError, match="t0 must be finite and > 0, got 0"):
        temperature_op(student, teacher, target, 0, 2.0, 0, -100, 0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="beta must be finite, got inf"):
        temperature_op(student, teacher, target, 0, 2.0, 0, -100, 4.0, float("inf"), 0.1)
    with pytest.raises(ValueError, match="min_temperature must be > 0, got -1"):
        temperature_op(student, teacher, target, 0, 2.0, 0, -100, 4.0, 1.0, -1.0)
    if student.device.type != "cpu":
        return  # a device assert on CUDA (see test_cuda_flag_is_one_async_assert)
    bad_target = target.clone()
    bad_target[1] = -3
    with pytest.raises(ValueError, match=r"target\[1\] = -3 is out of range"):
        weight_op(student, teacher, bad_target, 0, 2.0, 1, -100)
    # Labels are only read (and checked) when ka is on.
    weight_op(student, teacher, bad_target, 0, 2.0, 0, -100)


# ---------------------------------------------------------------------------------------------
# Value checks: the C++ op reads the labels on the CPU; the Triton kernel flags a bad one


@pytest.mark.parametrize("backend", TRITON)
def test_valid_calls_run_no_separate_value_checks(backend):
    if device_of(backend) != "cpu":
        pytest.skip("counts the ops of the interpreter path")
    student, teacher, target = sample(backend, 6, 9)
    assert_no_separate_value_checks(
        lambda: torch.ops.tskd_fast.dtd_weight_triton(student, teacher, target, 0, 2.0, 1, -100)
    )


@pytest.mark.parametrize("backend", TRITON)
def test_inputs_are_searched_only_when_the_kernel_flags(backend, monkeypatch):
    """The named errors come from the flag: with the host search stubbed out, a valid call never
    reaches it and a bad one still fails, with the fallback message."""
    if device_of(backend) != "cpu":
        pytest.skip("on CUDA the flag is asserted on the device (test_cuda_flag_is_one_async_assert)")
    student, teacher, target = sample(backend, 6, 9)
    bad = target.clone()
    bad[2] = 99
    assert_searched_only_when_flagged(
        monkeypatch,
        triton_dtd,
        lambda: torch.ops.tskd_fast.dtd_weight_triton(student, teacher, target, 0, 2.0, 1, -100),
        lambda: torch.ops.tskd_fast.dtd_weight_triton(student, teacher, bad, 1, 2.0, 1, -100),
        "dtd_weight_triton: the kernel flagged",
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bad_label_is_named_by_the_spec_check(backend):
    """The C++ op's label check and the Triton kernel's flag (named by the spec's value check)
    raise the same ValueError."""
    if device_of(backend) != "cpu":
        pytest.skip("on CUDA a bad label fails a device assert (test_cuda_flag_is_one_async_assert)")
    student, teacher, target = sample(backend, 6, 9)
    bad = target.clone()
    bad[2] = 99
    with pytest.raises(ValueError, match=r"target\[2\] = 99 is out of range"):
        op_for(backend, "dtd_weight")(student, teacher, bad, 1, 2.0, 1, -100)


@pytest.mark.parametrize("backend", TRITON)
def test_cuda_flag_is_one_async_assert(backend, monkeypatch):
    """A flag on a non-CPU device is never read on the host: one _assert_async with the op name,
    which speaks of labels only (the weights read no temperature)."""
    op = "tskd_fast::dtd_weight_triton"
    message = device_flag_message(monkeypatch, _launch, op, triton_dtd._WHAT)
    assert message.startswith(f"{op}: a target label is out of range")
    assert "temperature" not in message
