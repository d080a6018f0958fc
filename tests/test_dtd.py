"""DTD weights and temperatures: every backend against the reference, and their properties."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast import functional as F
from tskd_fast import reference

BACKENDS = kernel_backends()


def logits(rows, classes, dtype=torch.float32, device="cpu"):
    student = (torch.randn(rows, classes, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    teacher = (torch.randn(rows, classes, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (rows,), device=device)
    target[::4] = -100
    return student, teacher, target


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["flsw", "cwsm"])
@pytest.mark.parametrize("ka", ["none", "ps"])
@pytest.mark.parametrize("rows,classes", [(1, 1), (9, 7), (6, 100), (3, 1001)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_weights_match_reference(backend, mode, ka, rows, classes, dtype):
    device = device_of(backend)
    if dtype == torch.float64 and device != "cpu":
        pytest.skip("float64 runs on the CPU only")
    student, teacher, target = logits(rows, classes, dtype, device)
    w = F.dtd_weight(student, teacher, mode, 2.0, target, ka, backend=backend)
    same = F.dtd_weight(student, teacher, mode, 2.0, target, ka, backend="reference")
    truth = F.dtd_weight(student.double(), teacher.double(), mode, 2.0, target, ka, backend="reference")
    assert w.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close_to_truth(w, same, truth, dtype if dtype != torch.bfloat16 else torch.float32, f"{backend} w")


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
@pytest.mark.parametrize("mode", ["flsw", "cwsm"])
def test_offsets_sum_to_zero_without_clamp(backend, mode):
    device = device_of(backend) if backend != "reference" else "cpu"
    student, teacher, target = logits(33, 50, device=device)
    tau = F.dtd_temperature(student, teacher, t0=200.0, beta=0.7, mode=mode, backend=backend)
    assert tau.shape == (33,)
    assert abs(float((tau - 200.0).sum())) < 1e-3
    assert tau.std() > 0


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_temperature_is_clamped_and_has_no_gradient(backend):
    device = device_of(backend) if backend != "reference" else "cpu"
    student, teacher, _ = logits(16, 100, device=device)
    student.requires_grad_(True)
    tau = F.dtd_temperature(
        student, teacher, t0=1.0, beta=50.0, mode="cwsm", min_temperature=0.25, backend=backend
    )
    assert not tau.requires_grad
    assert float(tau.min()) == pytest.approx(0.25)
    assert bool((tau >= 0.25).all())


def test_harder_rows_get_lower_temperature():
    student = torch.randn(8, 20)
    teacher = student.clone()
    teacher[3] = -student[3]  # the student disagrees with the teacher on row 3
    tau = F.dtd_temperature(student, teacher, t0=4.0, beta=1.0, mode="flsw")
    assert int(tau.argmin()) == 3
    assert float(tau[3]) < 4.0 < float(tau[0])


def test_flsw_sees_the_probability_shifted_teacher():
    student, teacher, target = logits(12, 10)
    wrong = teacher.argmax(1) != target
    wrong &= target != -100
    plain = reference.dtd_weight(student, teacher, target, "flsw", 2.0, "none")
    shifted = reference.dtd_weight(student, teacher, target, "flsw", 2.0, "ps")
    manual = reference.dtd_weight(
        student, reference.probability_shift(teacher, target), None, "flsw", 2.0, "none"
    )
    torch.testing.assert_close(shifted, manual)
    assert torch.equal(plain[~wrong], shifted[~wrong])
    assert wrong.any() and not torch.equal(plain[wrong], shifted[wrong])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(mode="nope"), "mode must be one of"),
        (dict(t0=0.0), "t0 must be finite and > 0"),
        (dict(min_temperature=0.0), "min_temperature must be > 0"),
        (dict(gamma=-1.0), "gamma must be finite and >= 0"),
        (dict(ka="ps"), "needs target labels"),
        (dict(beta=float("nan")), "beta must be finite"),
    ],
)
def test_bad_arguments(kwargs, message):
    student, teacher, _ = logits(4, 5)
    with pytest.raises(ValueError, match=message):
        F.dtd_temperature(student, teacher, **kwargs)
