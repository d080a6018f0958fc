"""Every fused kd_loss backend against the PyTorch reference: values and gradients, all options."""

import itertools

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast import functional as F

BACKENDS = kernel_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused backend built")


def make_inputs(rows, classes, dtype, device, spread=3.0, ignore_every=5):
    student = (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=device, dtype=dtype)
    teacher = (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (rows,), device=device)
    if rows > 2:
        target[::ignore_every] = -100
        # Make some rows correctly predicted by the teacher so both KA branches run.
        right = torch.arange(1, rows, 3, device=device)
        target[right] = teacher[right].float().argmax(dim=1)
    return student, teacher, target


def run(backend, student, teacher, target, upstream=None, **kwargs):
    """(loss, d loss / d student) with backend; upstream weights the rows when reduction='none'."""
    z = student.detach().clone().requires_grad_(True)
    loss = F.kd_loss(z, teacher, target, backend=backend, **kwargs)
    if upstream is None and loss.dim() > 0:
        upstream = torch.ones_like(loss)
    total = (loss * upstream).sum() if upstream is not None else loss
    (grad,) = torch.autograd.grad(total, z)
    return loss.detach(), grad


def check_against_reference(backend, student, teacher, target, upstream=None, **kwargs):
    dtype = student.dtype
    loss, grad = run(backend, student, teacher, target, upstream, **kwargs)
    loss_ref, grad_ref = run("reference", student, teacher, target, upstream, **kwargs)
    truth_kwargs = dict(kwargs)
    if isinstance(truth_kwargs.get("temperature"), torch.Tensor):
        truth_kwargs["temperature"] = truth_kwargs["temperature"].double()
    up64 = upstream.double() if upstream is not None else None
    loss_64, grad_64 = run("reference", student.double(), teacher.double(), target, up64, **truth_kwargs)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close_to_truth(loss, loss_ref, loss_64, dtype, f"{backend} loss")
    assert_close_to_truth(grad, grad_ref, grad_64, dtype, f"{backend} grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "ka,ce_weight,scale,tensor_tau",
    list(itertools.product(["none", "ps", "lsr"], [0.0, 0.5], ["tau2", "none"], [False, True])),
)
def test_options_match_reference(backend, ka, ce_weight, scale, tensor_tau):
    device = device_of(backend)
    student, teacher, target = make_inputs(11, 37, torch.float32, device)
    temperature = torch.rand(11, device=device) * 4 + 0.5 if tensor_tau else 2.5
    upstream = torch.rand(11, device=device, dtype=torch.float64).float() + 0.5
    check_against_reference(
        backend,
        student,
        teacher,
        target,
        upstream,
        temperature=temperature,
        ka=ka,
        ce_weight=ce_weight,
        scale=scale,
        reduction="none",
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_reductions(backend, reduction):
    device = device_of(backend)
    student, teacher, target = make_inputs(9, 21, torch.float32, device)
    upstream = torch.rand(9, device=device) + 0.5 if reduction == "none" else None
    check_against_reference(
        backend,
        student,
        teacher,
        target,
        upstream,
        temperature=3.0,
        ka="ps",
        ce_weight=0.3,
        reduction=reduction,
    )


SHAPES = [(1, 1), (3, 2), (7, 17), (13, 100), (5, 1000), (2, 4099)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows,classes", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shapes_and_dtypes(backend, rows, classes, dtype):
    device = device_of(backend)
    if dtype == torch.float64 and device != "cpu":
        pytest.skip("float64 runs on the CPU only")
    student, teacher, target = make_inputs(rows, classes, dtype, device)
    for ka in ("ps", "lsr"):
        check_against_reference(
            backend, student, teacher, target, temperature=4.0, ka=ka, ce_weight=0.25, reduction="batchmean"
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_rows(backend):
    device = device_of(backend)
    rows = 2 if backend == "triton" and device == "cpu" else 6
    student, teacher, target = make_inputs(rows, 32000, torch.float32, device)
    check_against_reference(backend, student, teacher, target, temperature=2.0, ka="ps", ce_weight=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_one_shares_ce_exponentials(backend):
    # At tau == 1 the CPU kernel reuses the KD exponentials for the CE term.
    device = device_of(backend)
    student, teacher, target = make_inputs(8, 50, torch.float32, device)
    temperature = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0, 3.0, 1.0, 1.0], device=device)
    check_against_reference(
        backend, student, teacher, target, temperature=temperature, ka="lsr", ce_weight=1.0, reduction="none"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    device = device_of(backend)
    wide_s, wide_t, target = make_inputs(6, 80, torch.float32, device)
    # Row-strided views (a slice of the classes) and column-strided views (a transpose).
    student, teacher = wide_s[:, 5:45], wide_t[:, 5:45]
    target = target.clamp(max=39)
    assert not student.is_contiguous()
    check_against_reference(backend, student, teacher, target, temperature=2.0, ka="ps", ce_weight=0.5)
    student_t = wide_s[:, :6].t().contiguous().t()
    teacher_t = wide_t[:, :6].t().contiguous().t()
    assert student_t.stride(1) != 1
    check_against_reference(backend, student_t, teacher_t, target.clamp(max=5), temperature=2.0, ka="lsr")


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_batch(backend):
    device = device_of(backend)
    rows = 3000 if device_of(backend) == "cpu" and backend == "triton" else 70000
    student, teacher, target = make_inputs(rows, 3, torch.float32, device)
    check_against_reference(backend, student, teacher, target, temperature=4.0, ka="ps", ce_weight=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_class_gives_zero_loss(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(4, 1, torch.float32, device)
    loss, grad = run(backend, student, teacher, target, temperature=2.0, ka="lsr")
    assert loss.item() == 0.0
    assert torch.all(grad == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_logits_are_stable(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(5, 64, torch.float32, device, spread=300.0)
    check_against_reference(backend, student, teacher, target, temperature=1.5, ka="ps", ce_weight=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_masked_classes(backend):
    """-inf teacher logits are classes without target mass: they contribute nothing."""
    device = device_of(backend)
    student, teacher, target = make_inputs(6, 40, torch.float32, device)
    teacher = teacher.clone()
    teacher[:, 7] = float("-inf")
    teacher[2, 30:] = float("-inf")
    student = student.clone()
    student[3, 7] = float("-inf")  # masked for both: still 0
    target = target.clone()
    target[target == 7] = 0
    check_against_reference(backend, student, teacher, target, temperature=2.0, reduction="none")
    loss, grad = run(backend, student, teacher, None, temperature=2.0, reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_minus_inf_where_teacher_has_mass_is_infinite(backend):
    device = device_of(backend)
    student, teacher, _ = make_inputs(3, 10, torch.float32, device)
    student = student.clone()
    student[1, 4] = float("-inf")
    loss, _ = run(backend, student, teacher, None, temperature=2.0, reduction="none")
    assert loss[1].item() == float("inf")
    assert torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_rows_give_nan_and_leave_other_rows_alone(backend, bad):
    device = device_of(backend)
    student, teacher, target = make_inputs(5, 33, torch.float32, device)
    student, teacher = student.clone(), teacher.clone()
    student[1, 3] = bad
    teacher[3, 0] = bad
    loss, grad = run(backend, student, teacher, target, temperature=2.0, ka="ps", reduction="none")
    ok = [0, 2, 4]
    assert torch.isnan(loss[1]) and torch.isnan(loss[3])
    assert torch.isnan(grad[1]).all() and torch.isnan(grad[3]).all()
    clean_loss, clean_grad = run(
        "reference", student[ok], teacher[ok], target[ok], temperature=2.0, ka="ps", reduction="none"
    )
    torch.testing.assert_close(loss[ok], clean_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad[ok], clean_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_call_returns_the_same_loss(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(7, 19, torch.float32, device)
    with torch.no_grad():
        plain = F.kd_loss(student, teacher, target, ka="lsr", ce_weight=0.5, backend=backend)
    with_grad, _ = run(backend, student, teacher, target, ka="lsr", ce_weight=0.5)
    torch.testing.assert_close(plain, with_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_twice_with_retained_graph(backend):
    device = device_of(backend)
    student, teacher, target = make_inputs(6, 12, torch.float32, device)
    z = student.clone().requires_grad_(True)
    loss = F.kd_loss(z, teacher, target, ka="ps", backend=backend)
    loss.backward(retain_graph=True)
    first = z.grad.clone()
    loss.backward()
    torch.testing.assert_close(z.grad, 2 * first)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_scaled_and_summed_losses(backend):
    # loss.backward() on a batchmean loss hands the kernel's gradient on untouched; any other
    # incoming gradient (a weight, a second loss on the same logits) must still be applied.
    device = device_of(backend)
    student, teacher, target = make_inputs(7, 23, torch.float32, device)
    other = torch.randn_like(teacher)

    def grads(b):
        z = student.clone().requires_grad_(True)
        first = F.kd_loss(z, teacher, target, ka="ps", ce_weight=0.5, backend=b)
        second = F.kd_loss(z, other, temperature=2.0, reduction="sum", backend=b)
        (3.0 * first + second).backward()
        only = student.clone().requires_grad_(True)
        F.kd_loss(only, teacher, target, ka="ps", ce_weight=0.5, backend=b).backward()
        return z.grad, only.grad

    combined, single = grads(backend)
    combined_ref, single_ref = grads("reference")
    torch.testing.assert_close(combined, combined_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single, single_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_minus_inf_where_the_adjusted_target_has_mass(backend):
    """KA moves target mass onto the label and the teacher's argmax: a student -inf there is an
    infinite loss (and a finite gradient), as in the reference."""
    device = device_of(backend)
    student, teacher, _ = make_inputs(4, 12, torch.float32, device)
    teacher = teacher.clone()
    teacher[:, 3] = 20.0  # the teacher's argmax on every row
    target = torch.tensor([5, 6, 7, 3], device=device)  # rows 0-2 are wrong, row 3 right
    student = student.clone()
    student[0, 3] = float("-inf")  # at the argmax, which the swap gives exp(a_label) > 0
    student[1, 6] = float("-inf")  # at the label
    for ka, lsr_p in (("ps", 0.9), ("lsr", 0.9), ("lsr", 1.0)):
        loss, grad = run(
            backend, student, teacher, target, temperature=2.0, ka=ka, lsr_p=lsr_p, reduction="none"
        )
        ref, ref_grad = run(
            "reference", student, teacher, target, temperature=2.0, ka=ka, lsr_p=lsr_p, reduction="none"
        )
        assert torch.equal(torch.isinf(loss), torch.isinf(ref)), (ka, loss, ref)
        finite = torch.isfinite(ref)
        torch.testing.assert_close(loss[finite], ref[finite], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_exponential_underflow_counts_as_no_mass(backend):
    """A teacher class whose exponential underflows to 0 carries no target mass, also where the
    student is -inf (0 log 0 = 0), as in the reference."""
    device = device_of(backend)
    student, teacher, _ = make_inputs(3, 9, torch.float32, device)
    teacher, student = teacher.clone(), student.clone()
    teacher[1, 4] = -1e4  # exp((v - max v) / tau) underflows to exactly 0
    student[1, 4] = float("-inf")
    loss, grad = run(backend, student, teacher, None, temperature=1.0, reduction="none")
    ref, ref_grad = run("reference", student, teacher, None, temperature=1.0, reduction="none")
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
