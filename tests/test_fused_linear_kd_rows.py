"""The row op of the fused linear + KD loss (tskd_fast::fused_linear_kd_rows and its Triton twin)
against autograd of the PyTorch reference: every divergence, KA mode, CE, the top-k teacher,
ignored and non-finite rows, dtypes and row lengths; opcheck; the op's own input checks."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast.ops import fused_linear_kd as ops_flkd
from tskd_fast.ops import fused_linear_kd_driver as driver
from tskd_fast.ops.kd_loss import KA_MODES
from tskd_fast.reference.fused_linear_kd import (
    DIVERGENCES,
    divergence_rows,
    topk_student_log_buckets,
    topk_teacher_log_buckets,
)
from tskd_fast.reference.kd_loss import kd_target

KA = ["none", "ps", "lsr"]


def row_backends() -> list[str]:
    """The backends whose row kernel is built here."""
    found = []
    for backend in kernel_backends():
        try:
            if driver.rows_backend(backend, True, torch.device(device_of(backend))) == backend:
                found.append(backend)
        except ValueError:
            pass
    return found


BACKENDS = row_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused_linear_kd row kernel built")


def reference_rows(s, t, topk, target, tau, divergence, beta, ka, ce_weight, scale_tau2=True):
    """(row loss, d sum(loss) / d s) by autograd of the reference, in s's dtype."""
    s = s.detach().clone().requires_grad_(True)
    log_q = F.log_softmax(s / tau[:, None], dim=1)
    if topk is None:
        log_p = torch.log(kd_target(t, target, tau, ka, 0.9, -100))
    else:
        ids, logprobs = topk
        log_p = topk_teacher_log_buckets(ids, logprobs, tau, s.shape[1])
        log_q = topk_student_log_buckets(log_q, ids)
    row = divergence_rows(log_p, log_q, divergence, beta)
    if scale_tau2:
        row = row * tau.square()
    if ce_weight:
        row = row + ce_weight * F.cross_entropy(s, target, reduction="none", ignore_index=-100)
    if target is not None:
        row = torch.where(target != -100, row, torch.zeros_like(row))
    (grad,) = torch.autograd.grad(row.sum(), s)
    return row.detach(), grad


def run_rows(
    backend, s, t, topk, target, tau, divergence, beta, ka, ce_weight, scale_tau2=True, grad_scale=1.0
):
    buf = s.detach().clone()
    ids, logprobs = topk if topk is not None else (None, None)
    loss = driver.rows_op(backend)(
        buf,
        t,
        ids,
        logprobs,
        target,
        tau,
        ops_flkd.DIVERGENCES[divergence],
        beta,
        KA_MODES[ka],
        0.9,
        scale_tau2,
        ce_weight,
        -100,
        True,
        grad_scale,
    )
    return loss, buf


def make_rows(rows, classes, dtype, device, spread=3.0):
    s = (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=device, dtype=dtype)
    t = (torch.randn(rows, classes, dtype=torch.float64) * spread).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (rows,), device=device)
    if rows > 2:
        target[0] = -100
        target[1] = t[1].float().argmax()  # a row the teacher gets right: KA leaves it alone
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    tau = (torch.rand(rows, dtype=torch.float64) * 2 + 0.5).to(device=device, dtype=opmath)
    if rows > 3:
        tau[3] = 1.0  # CE reuses the KD exponentials at tau = 1
    return s, t, target, tau


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence,ka,ce_weight", list(itertools.product(DIVERGENCES, KA, [0.0, 0.7])))
def test_every_option_float64(backend, divergence, ka, ce_weight):
    device = device_of(backend)
    if device != "cpu":
        pytest.skip("float64 runs on the CPU only")
    s, t, target, tau = make_rows(7, 300, torch.float64, device)
    loss_ref, grad_ref = reference_rows(s, t, None, target, tau, divergence, 0.3, ka, ce_weight)
    loss, grad = run_rows(backend, s, t, None, target, tau, divergence, 0.3, ka, ce_weight)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence,ce_weight", list(itertools.product(DIVERGENCES, [0.0, 0.7])))
def test_topk_teacher_float64(backend, divergence, ce_weight):
    device = device_of(backend)
    if device != "cpu":
        pytest.skip("float64 runs on the CPU only")
    s, t, target, tau = make_rows(7, 300, torch.float64, device)
    top = torch.log_softmax(t, dim=1).topk(20, dim=1)
    topk = (top.indices, top.values)
    target[2] = top.indices[2, 5]  # a label among the listed ids
    loss_ref, grad_ref = reference_rows(s, None, topk, target, tau, divergence, 0.3, "none", ce_weight)
    loss, grad = run_rows(backend, s, None, topk, target, tau, divergence, 0.3, "none", ce_weight)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_of_the_whole_vocabulary_has_no_tail(backend):
    """K = V: the teacher's tail is empty and the student's tail too."""
    device = device_of(backend)
    s, t, target, tau = make_rows(4, 9, torch.float32, device)
    top = torch.log_softmax(t, dim=1).topk(9, dim=1)
    topk = (top.indices, top.values)
    loss_ref, grad_ref = reference_rows(
        s.double(), None, (topk[0], topk[1].double()), target, tau.double(), "jsd", 0.5, "none", 0.0
    )
    loss, grad = run_rows(backend, s, None, topk, target, tau, "jsd", 0.5, "none", 0.0)
    torch.testing.assert_close(loss.double(), loss_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-5, atol=1e-6)


SHAPES = [(1, 1), (3, 2), (5, 17), (4, 2047), (3, 2049), (2, 5000)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows,classes", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_shapes_and_dtypes(backend, rows, classes, dtype, divergence):
    """Rows shorter than a vector, across the 2048-column blocks of pass A, in every dtype: within
    twice the error of the reference at the same precision (tests/tolerance.py)."""
    device = device_of(backend)
    s, t, target, tau = make_rows(rows, classes, dtype, device)
    ka = "ps" if classes > 1 else "none"
    loss, grad = run_rows(backend, s, t, None, target, tau, divergence, 0.5, ka, 0.25)
    opmath = tau.dtype
    loss_same, grad_same = reference_rows(
        s.to(opmath), t.to(opmath), None, target, tau, divergence, 0.5, ka, 0.25
    )
    loss_64, grad_64 = reference_rows(
        s.double(), t.double(), None, target, tau.double(), divergence, 0.5, ka, 0.25
    )
    assert grad.dtype == dtype and loss.dtype == opmath
    assert_close_to_truth(loss, loss_same, loss_64, dtype, f"{backend} row loss")
    assert_close_to_truth(grad, grad_same.to(dtype), grad_64, dtype, f"{backend} row grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_rows_are_zero_and_grad_scale_scales(backend):
    device = device_of(backend)
    s, t, target, tau = make_rows(5, 40, torch.float32, device)
    target[2] = -100
    loss, grad = run_rows(backend, s, t, None, target, tau, "reverse_kl", 0.5, "lsr", 0.5, grad_scale=0.25)
    _, grad_one = run_rows(backend, s, t, None, target, tau, "reverse_kl", 0.5, "lsr", 0.5)
    assert loss[0] == 0 and loss[2] == 0 and (loss[[1, 3, 4]] > 0).all()
    assert (grad[[0, 2]] == 0).all()
    torch.testing.assert_close(grad, grad_one * 0.25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_rows_are_nan_alone(backend):
    device = device_of(backend)
    s, t, target, tau = make_rows(4, 50, torch.float32, device)
    target[0] = 3
    s[1, 7] = float("nan")
    t[2, 9] = float("inf")
    s[3, 11] = float("-inf")  # a class of zero probability: the row stays finite
    loss, grad = run_rows(backend, s, t, None, target, tau, "jsd", 0.5, "none", 0.0)
    assert torch.isnan(loss[1:3]).all() and torch.isnan(grad[1:3]).all()
    assert torch.isfinite(loss[[0, 3]]).all() and torch.isfinite(grad[[0, 3]]).all()
    assert grad[3, 11] == 0


def test_opcheck_row_op():
    if "cpu" not in BACKENDS:
        pytest.skip("the C++ row op is not built")
    s, t, target, tau = make_rows(5, 33, torch.float32, "cpu")
    op = torch.ops.tskd_fast.fused_linear_kd_rows.default
    torch.library.opcheck(
        op, (s.clone(), t, None, None, target, tau, 2, 0.5, 1, 0.9, True, 0.5, -100, True, 1.0)
    )
    top = torch.log_softmax(t, dim=1).topk(4, dim=1)
    args = (
        s.clone(),
        None,
        top.indices,
        top.values,
        target,
        tau,
        0,
        0.5,
        0,
        0.9,
        False,
        0.0,
        -100,
        True,
        0.5,
    )
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if device_of(b) == "cpu"])
def test_row_op_errors_name_the_argument(backend):
    """The same words from the C++ op and the Triton op (on the CPU, where values are read)."""
    s, t, target, tau = make_rows(5, 33, torch.float32, "cpu")
    op = driver.rows_op(backend)
    top = torch.log_softmax(t, dim=1).topk(4, dim=1)

    def call(**changes):
        args = dict(
            student=s.clone(),
            teacher=t,
            topk_ids=None,
            topk_logprobs=None,
            target=target,
            temperature=tau,
            divergence=0,
            beta=0.5,
            ka=0,
            lsr_p=0.9,
            scale_tau2=True,
            ce_weight=0.0,
            ignore_index=-100,
            compute_grad=True,
        )
        args.update(changes)
        return op(*args.values())

    with pytest.raises(ValueError, match="either teacher logits or a top-k teacher"):
        call(topk_ids=top.indices, topk_logprobs=top.values)
    with pytest.raises(ValueError, match="divergence must be"):
        call(divergence=6)
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\) for jsd"):
        call(divergence=2, beta=1.0)
    with pytest.raises(ValueError, match=r"temperature\[1\] = 0"):
        bad = tau.clone()
        bad[1] = 0
        call(temperature=bad)
    with pytest.raises(ValueError, match="is out of range"):
        bad = target.clone()
        bad[4] = 33
        call(target=bad)
    with pytest.raises(ValueError, match="knowledge adjustment needs the teacher's logits"):
        call(teacher=None, topk_ids=top.indices, topk_logprobs=top.values, ka=1)
    with pytest.raises(ValueError, match="lists id 5 twice"):
        ids = top.indices.clone()
        ids[2, :2] = 5
        call(teacher=None, topk_ids=ids, topk_logprobs=top.values)
    with pytest.raises(ValueError, match=r"topk_ids\[1, 1\] = 40 is out of range"):
        ids = top.indices.clone()
        ids[1, 1] = 40
        call(teacher=None, topk_ids=ids, topk_logprobs=top.values)
    with pytest.raises(ValueError, match="unit stride along classes"):
        call(student=s.t().contiguous().t())


@pytest.mark.parametrize("backend", [b for b in BACKENDS if device_of(b) == "cpu"])
def test_row_op_has_no_gradient_of_its_own(backend):
    """The driver owns the gradient: differentiating through the row op itself raises at backward,
    and writing over a leaf that requires grad raises at once (never a silent None gradient)."""
    s, t, target, tau = make_rows(3, 7, torch.float32, "cpu")
    op = driver.rows_op(backend)
    leaf = s.clone().requires_grad_(True)
    args = (t, None, None, target, tau, 0, 0.5, 0, 0.9, True, 0.0, -100, True, 1.0)
    loss = op(leaf * 1, *args)
    with pytest.raises(
        RuntimeError,
        match="derivative for tskd_fast::fused_linear_kd_rows is not implemented|"
        "backward through tskd_fast.fused_linear_kd_rows_triton.default but no autograd formula",
    ):
        loss.sum().backward()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        op(leaf, *args)
