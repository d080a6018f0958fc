"""What knowledge adjustment does to the target, checked on the reference and on the fused loss."""

import pytest
import torch

from tests.conftest import kernel_backends
from tskd_fast import functional as F
from tskd_fast import reference


def case(rows=40, classes=10):
    teacher = torch.randn(rows, classes) * 3
    target = torch.randint(0, classes, (rows,))
    target[::7] = -100
    tau = torch.rand(rows) * 3 + 0.5
    return teacher, target, tau


def wrong_rows(teacher, target):
    return (target != -100) & (teacher.argmax(1) != target)


@pytest.mark.parametrize("ka", ["ps", "lsr"])
def test_only_wrongly_predicted_rows_change(ka):
    teacher, target, tau = case()
    plain = reference.kd_target(teacher, target, tau, "none")
    adjusted = reference.kd_target(teacher, target, tau, ka)
    wrong = wrong_rows(teacher, target)
    assert wrong.any() and (~wrong).any()
    assert torch.equal(adjusted[~wrong], plain[~wrong])
    assert not torch.allclose(adjusted[wrong], plain[wrong])
    # The label now holds the target's largest probability.
    assert torch.equal(adjusted[wrong].argmax(1), target[wrong])


def test_probability_shift_is_a_permutation_of_the_teacher():
    teacher, target, tau = case()
    plain = reference.kd_target(teacher, target, tau, "none")
    shifted = reference.kd_target(teacher, target, tau, "ps")
    torch.testing.assert_close(shifted.sort(dim=1).values, plain.sort(dim=1).values)
    wrong = wrong_rows(teacher, target)
    rows = wrong.nonzero().squeeze(1)
    argmax = teacher.argmax(1)
    torch.testing.assert_close(shifted[rows, target[rows]], plain[rows, argmax[rows]])
    torch.testing.assert_close(shifted[rows, argmax[rows]], plain[rows, target[rows]])


def test_label_smoothing_target():
    teacher, target, tau = case(classes=8)
    smoothed = reference.kd_target(teacher, target, tau, "lsr", lsr_p=0.8)
    wrong = wrong_rows(teacher, target)
    rows = wrong.nonzero().squeeze(1)
    expected = torch.full((len(rows), 8), 0.2 / 7)
    expected[torch.arange(len(rows)), target[rows]] = 0.8
    torch.testing.assert_close(smoothed[rows], expected)
    torch.testing.assert_close(smoothed.sum(1), torch.ones(len(teacher)))


# The fused kernels against the definitions themselves, on the CPU kernel (the backend tests
# compare every other kernel with the reference).
needs_cpu_kernel = pytest.mark.skipif("cpu" not in kernel_backends(), reason="tskd_fast._C is not built")


@needs_cpu_kernel
def test_fused_probability_shift_equals_the_loss_on_the_swapped_teacher():
    backend = "cpu"
    teacher, target, tau = case()
    student = torch.randn_like(teacher)
    swapped = reference.probability_shift(teacher, target)
    shifted = F.kd_loss(student, teacher, target, tau, ka="ps", reduction="none", backend=backend)
    manual = F.kd_loss(student, swapped, None, tau, reduction="none", backend=backend)
    torch.testing.assert_close(shifted, manual, rtol=1e-5, atol=1e-6)
    wrong = wrong_rows(teacher, target)
    plain = F.kd_loss(student, teacher, target, tau, reduction="none", backend=backend)
    assert torch.equal(shifted[~wrong], plain[~wrong])


@needs_cpu_kernel
def test_fused_label_smoothing_equals_the_kl_to_the_smoothed_target():
    backend = "cpu"
    teacher, target, tau = case()
    student = torch.randn_like(teacher, dtype=torch.float64)
    loss = F.kd_loss(
        student,
        teacher.double(),
        target,
        tau.double(),
        ka="lsr",
        lsr_p=0.7,
        reduction="none",
        backend=backend,
    )
    q = reference.kd_target(teacher.double(), target, tau.double(), "lsr", lsr_p=0.7)
    log_p = torch.log_softmax(student / tau.double().unsqueeze(1), dim=1)
    manual = (q * (q.log() - log_p)).sum(1) * tau.double() ** 2
    torch.testing.assert_close(loss, manual)
