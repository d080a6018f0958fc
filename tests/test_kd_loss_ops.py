"""tskd_fast::kd_loss on every backend as a PyTorch op: opcheck, float64 gradcheck,
torch.compile(fullgraph=True), the op's reductions, and its own input checks."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tskd_fast import functional as F
from tskd_fast.ops import op_for

BACKENDS = kernel_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused backend built")

# The Triton interpreter is slow and opcheck calls the op many times: fewer cases there.
OPCHECK_DTYPES = {
    "cpu": (torch.float32, torch.float64, torch.bfloat16),
    "cuda": (torch.float32, torch.bfloat16),
    "triton": (torch.float32, torch.bfloat16),
}
OPCHECK_CASES = [(b, d) for b in BACKENDS for d in OPCHECK_DTYPES[b]]


def sample(backend, rows=5, classes=11, dtype=torch.float32):
    device = device_of(backend)
    student = (torch.randn(rows, classes, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    teacher = (torch.randn(rows, classes, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (rows,), device=device)
    target[0] = -100
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    temperature = (torch.rand(rows, dtype=opmath) * 3 + 0.5).to(device)
    return student, teacher, target, temperature


@pytest.mark.parametrize("backend,dtype", OPCHECK_CASES)
@pytest.mark.parametrize("ka,ce_weight", [(0, 0.0), (1, 0.5), (2, 1.0)])
def test_opcheck(backend, dtype, ka, ce_weight):
    if backend == "triton" and ka == 0:
        pytest.skip("the interpreter is slow; ka=0 runs below without a target")
    op = op_for(backend, "kd_loss")
    student, teacher, target, temperature = sample(backend, dtype=dtype)
    student.requires_grad_(True)
    args = (student, teacher, target, temperature, ka, 0.9, True, ce_weight, -100, True)
    torch.library.opcheck(op, args)
    no_target = (student.detach(), teacher, None, temperature, 0, 0.9, False, 0.0, -100, False)
    torch.library.opcheck(op, no_target)
    for reduction, grad_scale in ((1, 1.0), (2, 0.2)):
        torch.library.opcheck(op, (*args, grad_scale, reduction))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_the_op_reduces_the_rows(backend, reduction):
    """sum and mean of the per-row losses, and their gradients, from the op itself."""
    op = op_for(backend, "kd_loss")
    student, teacher, target, temperature = sample(backend)
    grad_scale = 1.0 / student.shape[0] if reduction == 2 else 1.0
    z = student.clone().requires_grad_(True)
    loss, _ = op(z, teacher, target, temperature, 1, 0.9, True, 0.5, -100, True, grad_scale, reduction)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    z_rows = student.clone().requires_grad_(True)
    rows, _ = op(z_rows, teacher, target, temperature, 1, 0.9, True, 0.5, -100, True)
    want = (rows, rows.sum(), rows.mean())[reduction]
    (want_grad,) = torch.autograd.grad(want.sum(), z_rows)
    assert loss.shape == want.shape
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(grad, want_grad)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if device_of(b) == "cpu"])
@pytest.mark.parametrize("ka", ["none", "ps", "lsr"])
@pytest.mark.parametrize("ce_weight", [0.0, 0.7])
@pytest.mark.parametrize("scale", ["tau2", "none"])
def test_gradcheck_float64(backend, ka, ce_weight, scale):
    if backend == "triton" and (ka, ce_weight, scale) != ("ps", 0.7, "tau2"):
        pytest.skip("the interpreter is slow: one case there")
    student, teacher, target, temperature = sample(backend, 4, 9, torch.float64)
    student.requires_grad_(True)

    def loss(z):
        return F.kd_loss(
            z,
            teacher,
            target,
            temperature,
            ka=ka,
            ce_weight=ce_weight,
            scale=scale,
            reduction="none",
            backend=backend,
        )

    assert torch.autograd.gradcheck(loss, (student,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph_matches_eager(backend):
    student, teacher, target, _ = sample(backend, 16, 37)

    def step(z, v, y):
        tau = F.dtd_temperature(z, v, t0=3.0, target=y, ka="ps", backend=backend)
        return F.kd_loss(z, v, y, tau, ka="ps", ce_weight=0.5, backend=backend)

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    eager = step(z1, teacher, target)
    eager.backward()
    traced = compiled(z2, teacher, target)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    torch.testing.assert_close(z2.grad, z1.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_module_runs_without_graph_breaks(backend):
    from tskd_fast.nn import KDLoss

    student, teacher, _, _ = sample(backend, 8, 20)
    criterion = KDLoss(T=4.0, backend=backend)
    compiled = torch.compile(criterion, fullgraph=True, backend="aot_eager")
    z = student.clone().requires_grad_(True)
    out = compiled(z, teacher)
    out.backward()
    z_ref = student.clone().requires_grad_(True)
    criterion(z_ref, teacher).backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_target_and_without_gradient(backend):
    op = op_for(backend, "kd_loss")
    student, teacher, _, _ = sample(backend, 9, 50)
    tau = torch.full((9,), 3.0, device=student.device)
    args = (student, teacher, None, tau, 0, 0.9, True, 0.0, -100)
    loss, grad = op(*args, False)
    assert grad.shape == (0,) and grad.dtype == student.dtype
    want = F.kd_loss(
        student.cpu().double(), teacher.cpu().double(), temperature=3.0, reduction="none", backend="reference"
    )
    torch.testing.assert_close(loss.cpu().double(), want, rtol=1e-5, atol=1e-6)
    with_grad, _ = op(*args, True)
    torch.testing.assert_close(loss, with_grad)
    z = student.clone().requires_grad_(True)
    loss, _ = op(z, teacher, None, tau, 0, 0.9, True, 0.0, -100, False)
    with pytest.raises(RuntimeError, match="compute_grad=False, so it kept no gradient"):
        loss.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_errors_name_the_argument(backend):
    """Every backend's op raises ValueError with the same words (tests/test_op_specs.py compares the
    C++ and Python checks on more inputs)."""
    op = op_for(backend, "kd_loss")
    student, teacher, target, tau = sample(backend)
    on_cpu = student.device.type == "cpu"

    def call(s=student, v=teacher, y=target, t=tau, ka=1, lsr_p=0.9, ce=0.5, ignore=-100, reduction=0):
        return op(s, v, y, t, ka, lsr_p, True, ce, ignore, True, 1.0, reduction)

    with pytest.raises(ValueError, match=r"student_logits must be 2-D \(batch, classes\), got shape \(11,\)"):
        call(s=student[0], v=teacher[0])
    with pytest.raises(
        ValueError, match=r"teacher_logits must have the shape of student_logits \(5, 11\), got \(5, 5\)"
    ):
        call(v=teacher[:, :5])
    with pytest.raises(ValueError, match="empty batch"):
        call(s=student[:0], v=teacher[:0], y=target[:0], t=tau[:0])
    with pytest.raises(ValueError, match="has 0 classes"):
        call(s=student[:, :0], v=teacher[:, :0])
    with pytest.raises(ValueError, match="must be float32, float16, bfloat16 or float64, got torch.int64"):
        call(s=student.long(), v=teacher.long())
    with pytest.raises(
        ValueError, match=r"teacher_logits must have the dtype of student_logits \(torch.float32\)"
    ):
        call(v=teacher.half())
    with pytest.raises(ValueError, match=r"target must have shape \(batch,\) = \(5,\), got \(4,\)"):
        call(y=target[:4])
    with pytest.raises(ValueError, match="target must be torch.int64, got torch.int32"):
        call(y=target.int())
    with pytest.raises(ValueError, match=r"ka must be 0 \(none\), 1 \(ps\) or 2 \(lsr\), got 3"):
        call(ka=3)
    with pytest.raises(ValueError, match=r"ka=1 \(ps\) needs target labels, but target is None"):
        call(y=None, ce=0.0)
    with pytest.raises(ValueError, match="ce_weight != 0 needs target labels"):
        call(y=None, ka=0)
    with pytest.raises(ValueError, match=r"lsr_p must be in \(0, 1\], got 1.5"):
        call(lsr_p=1.5)
    with pytest.raises(ValueError, match="ce_weight must be finite"):
        call(ce=float("inf"))
    with pytest.raises(ValueError, match=r"reduction must be 0 \(none\), 1 \(sum\) or 2 \(mean\), got 3"):
        call(reduction=3)
    with pytest.raises(ValueError, match=r"temperature must have shape \(batch,\) = \(5,\), got \(1,\)"):
        call(t=tau[:1])
    with pytest.raises(
        ValueError, match="temperature must be torch.float32 for torch.float32 logits, got torch.float64"
    ):
        call(t=tau.double())
    if not on_cpu:
        with pytest.raises(ValueError, match="float64 logits are supported on the CPU only"):
            call(s=student.double(), v=teacher.double(), t=tau.double())
    # ignore_index itself is always a valid label
    call(y=torch.full_like(target, 7), ignore=7)
    if not on_cpu:
        # On CUDA bad values fail a device assert, which loses the CUDA context (as the CUDA C++
        # kernels' asserts do): test_kd_loss_triton_launch checks that in a subprocess.
        return
    bad_target = target.clone()
    bad_target[3] = 11
    with pytest.raises(ValueError, match=r"target\[3\] = 11 is out of range: labels must be in \[0, 11\)"):
        call(y=bad_target)
    bad_tau = tau.clone()
    bad_tau[2] = -1.0
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0, got temperature\[2\] = -1"):
        call(t=bad_tau)
    bad_tau[2] = float("nan")
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0, got temperature\[2\] = nan"):
        call(t=bad_tau)
