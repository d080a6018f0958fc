"""DTD with non-finite rows (NaN or inf logits, as fp16 AMP overflow gives): on every backend such a
row gets tau = t0 and a NaN loss, and the other rows' temperatures and losses are those of the
batch without it. No error on the CPU, no device assert on CUDA (which would lose the context)."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tskd_fast import functional as F
from tskd_fast import reference

BACKENDS = kernel_backends() + ["reference"]
T0 = 4.0


def batch(rows=11, classes=13, device="cpu"):
    student = (torch.randn(rows, classes, dtype=torch.float64) * 2).float().to(device)
    teacher = (torch.randn(rows, classes, dtype=torch.float64) * 2).float().to(device)
    target = torch.randint(0, classes, (rows,), device=device)
    return student, teacher, target


def poison(student, teacher):
    """NaN and inf in a few rows of both inputs; returns the rows whose student is bad (every
    weight of those rows is non-finite) and those whose teacher only is (flsw only)."""
    student[2, 5] = float("nan")
    student[7, 0] = float("inf")
    teacher[4, 3] = float("inf")
    return [2, 7], [4]


def device_for(backend):
    return "cpu" if backend == "reference" else device_of(backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["flsw", "cwsm"])
def test_nonfinite_rows_get_t0_and_leave_the_others_alone(backend, mode):
    student, teacher, target = batch(device=device_for(backend))
    student_bad, teacher_bad = poison(student, teacher)
    bad = student_bad + (teacher_bad if mode == "flsw" else [])
    good = [n for n in range(student.shape[0]) if n not in bad]
    kwargs = dict(t0=T0, beta=1.5, mode=mode, ka="ps", backend=backend)

    w = F.dtd_weight(student, teacher, mode, 2.0, target, "ps", backend=backend)
    assert not torch.isfinite(w[bad]).any() and torch.isfinite(w[good]).all()

    tau = F.dtd_temperature(student, teacher, target=target, **kwargs)
    assert torch.isfinite(tau).all() and (tau > 0).all()
    assert torch.equal(tau[bad].cpu(), torch.full((len(bad),), T0))
    alone = F.dtd_temperature(student[good], teacher[good], target=target[good], **kwargs)
    torch.testing.assert_close(tau[good], alone, rtol=1e-6, atol=1e-6)
    # The offsets of the finite rows still sum to zero (no clamp at beta = 1.5 here).
    assert abs(float((tau[good] - T0).sum())) < 1e-4

    loss = F.kd_loss(student, teacher, target, tau, ka="ps", ce_weight=1.0, reduction="none", backend=backend)
    assert torch.isnan(loss[student_bad + teacher_bad]).all()
    rest = [n for n in good if n not in teacher_bad]
    want = F.kd_loss(
        student[rest],
        teacher[rest],
        target[rest],
        tau[rest],
        ka="ps",
        ce_weight=1.0,
        reduction="none",
        backend=backend,
    )
    torch.testing.assert_close(loss[rest], want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_of_only_nonfinite_rows_gets_t0_everywhere(backend):
    student, teacher, target = batch(rows=3, device=device_for(backend))
    student[:, 1] = float("nan")
    tau = F.dtd_temperature(student, teacher, t0=T0, beta=2.0, mode="cwsm", backend=backend)
    assert torch.equal(tau.cpu(), torch.full((3,), T0))
    loss = F.kd_loss(student, teacher, target, tau, reduction="none", backend=backend)
    assert torch.isnan(loss).all()


def test_temperatures_from_weights_in_float64_and_under_the_clamp():
    w = torch.tensor([0.5, float("nan"), 2.5, float("-inf"), 1.0], dtype=torch.float64)
    tau = reference.dtd.temperatures_from_weights(w, 1.0, 2.0, 0.25)
    mean = (0.5 + 2.5 + 1.0) / 3
    want = torch.tensor([1 + 2 * (mean - 0.5), 1.0, 0.25, 1.0, 1 + 2 * (mean - 1.0)], dtype=torch.float64)
    assert tau.dtype == torch.float64
    torch.testing.assert_close(tau, want, rtol=0, atol=1e-15)


def test_nonfinite_rows_compile_without_graph_breaks():
    student, teacher, target = batch()
    poison(student, teacher)

    def temperatures(z, v, y):
        return F.dtd_temperature(z, v, t0=T0, target=y, ka="ps", backend="cpu")

    compiled = torch.compile(temperatures, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(student, teacher, target), temperatures(student, teacher, target))
