"""Bad input to tskd_fast.functional.kd_loss gets a ValueError that names the argument, whichever
backend rejects it."""

import pytest
import torch

from tskd_fast import functional as F


def inputs(rows=4, classes=6):
    return torch.randn(rows, classes), torch.randn(rows, classes), torch.randint(0, classes, (rows,))


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize(
    "change,message",
    [
        (dict(ka="swap"), "ka must be one of"),
        (dict(scale="t2"), "scale must be one of"),
        (dict(reduction="mean"), "reduction must be one of"),
        (dict(temperature=0.0), "temperature must be finite and > 0"),
        (dict(temperature=-2.0), "temperature must be finite and > 0"),
        (dict(temperature=float("nan")), "temperature must be finite and > 0"),
        (dict(temperature=torch.tensor([1.0, 2.0])), r"temperature must be .*shape \(batch,\)"),
        (dict(temperature=torch.tensor([1.0, 0.0, 1.0, 1.0])), "temperature must be finite and > 0"),
        (dict(temperature="4"), "temperature must be a float or a tensor"),
        (dict(lsr_p=1.5), "lsr_p must be in"),
        (dict(target=None, ka="ps"), r"ka=1 \(ps\) needs target labels"),
        (dict(target=None, ce_weight=0.5), "ce_weight != 0 needs target labels"),
        (dict(target=torch.tensor([0, 1, 2, 6])), r"target\[3\] = 6 is out of range"),
        (dict(target=torch.tensor([0.0, 1.0, 2.0, 3.0])), "target must be an integer tensor"),
        (dict(target=torch.tensor([0, 1])), r"target must have shape \(batch,\)"),
        (dict(backend="gpu"), "backend must be one of"),
    ],
)
def test_kd_loss_rejects(backend, change, message):
    student, teacher, target = inputs()
    kwargs = dict(target=target, backend=backend)
    kwargs.update(change)
    target_arg = kwargs.pop("target")
    with pytest.raises(ValueError, match=message):
        F.kd_loss(student, teacher, target_arg, **kwargs)


@pytest.mark.parametrize(
    "student,teacher,message",
    [
        (torch.randn(4), torch.randn(4), "student_logits must be 2-D"),
        (torch.randn(4, 6), torch.randn(4, 5), "teacher_logits must have the shape"),
        (torch.randn(0, 6), torch.randn(0, 6), "empty batch"),
        (torch.randn(3, 0), torch.randn(3, 0), "0 classes"),
        (
            torch.randint(0, 3, (4, 6)),
            torch.randn(4, 6),
            "student_logits must be float32, float16, bfloat16 or float64, got torch.int64",
        ),
        ([[1.0]], torch.randn(1, 1), "student_logits must be a torch.Tensor"),
    ],
)
def test_kd_loss_rejects_logits(student, teacher, message):
    with pytest.raises(ValueError, match=message):
        F.kd_loss(student, teacher)


def test_forced_backend_that_cannot_run_here():
    student, teacher, _ = inputs()
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        F.kd_loss(student, teacher, backend="cuda")


def test_environment_variable_sets_the_default_backend(monkeypatch):
    student, teacher, _ = inputs()
    monkeypatch.setenv("TSKD_FAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="TSKD_FAST_BACKEND='nonsense' is not a backend"):
        F.kd_loss(student, teacher)
    monkeypatch.setenv("TSKD_FAST_BACKEND", "reference")
    out = F.kd_loss(student, teacher)
    monkeypatch.delenv("TSKD_FAST_BACKEND")
    torch.testing.assert_close(out, F.kd_loss(student, teacher, backend="reference"))


def test_teacher_of_another_dtype_is_cast_and_gets_no_gradient():
    student = torch.randn(5, 9, requires_grad=True)
    teacher = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    loss = F.kd_loss(student, teacher)
    loss.backward()
    assert loss.dtype == torch.float32
    assert teacher.grad is None and student.grad is not None


def test_half_precision_loss_comes_back_in_the_input_dtype():
    student = torch.randn(5, 9).half()
    teacher = torch.randn(5, 9).half()
    assert F.kd_loss(student, teacher).dtype == torch.float16
    assert F.kd_loss(student, teacher, reduction="none").shape == (5,)
