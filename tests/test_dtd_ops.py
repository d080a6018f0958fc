"""tskd_fast::dtd_weight and dtd_temperature on every backend as PyTorch ops: opcheck, no gradient,
the temperatures against the reference formula, and the ops' own input checks."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tskd_fast.ops import op_for
from tskd_fast.reference.dtd import temperatures_from_weights

BACKENDS = kernel_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused backend built")


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
        return  # a device assert on CUDA (see test_kd_loss_ops)
    bad_target = target.clone()
    bad_target[1] = -3
    with pytest.raises(ValueError, match=r"target\[1\] = -3 is out of range"):
        weight_op(student, teacher, bad_target, 0, 2.0, 1, -100)
    # Labels are only read (and checked) when ka is on.
    weight_op(student, teacher, bad_target, 0, 2.0, 0, -100)
