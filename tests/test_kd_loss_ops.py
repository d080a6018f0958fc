"""The C++ kd_loss / dtd_weight ops as PyTorch ops: opcheck, float64 gradcheck, torch.compile."""

import pytest
import torch

from tests.conftest import kernel_backends
from tskd_fast import functional as F

pytestmark = pytest.mark.skipif("cpu" not in kernel_backends(), reason="tskd_fast._C is not built")


def sample(rows=5, classes=11, dtype=torch.float32):
    student = torch.randn(rows, classes, dtype=dtype) * 2
    teacher = torch.randn(rows, classes, dtype=dtype) * 2
    target = torch.randint(0, classes, (rows,))
    target[0] = -100
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    temperature = torch.rand(rows, dtype=opmath) * 3 + 0.5
    return student, teacher, target, temperature


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("ka,ce_weight", [(0, 0.0), (1, 0.5), (2, 1.0)])
def test_opcheck_kd_loss(dtype, ka, ce_weight):
    student, teacher, target, temperature = sample(dtype=dtype)
    student.requires_grad_(True)
    args = (student, teacher, target, temperature, ka, 0.9, True, ce_weight, -100, True)
    torch.library.opcheck(torch.ops.tskd_fast.kd_loss.default, args)
    no_target = (student.detach(), teacher, None, temperature, 0, 0.9, False, 0.0, -100, False)
    torch.library.opcheck(torch.ops.tskd_fast.kd_loss.default, no_target)


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("ka", [0, 1])
def test_opcheck_dtd_weight(mode, ka):
    student, teacher, target, _ = sample()
    args = (student, teacher, target, mode, 2.0, ka, -100)
    torch.library.opcheck(
        torch.ops.tskd_fast.dtd_weight.default, args, test_utils=("test_schema", "test_faketensor")
    )


@pytest.mark.parametrize("ka", ["none", "ps", "lsr"])
@pytest.mark.parametrize("ce_weight", [0.0, 0.7])
@pytest.mark.parametrize("scale", ["tau2", "none"])
def test_gradcheck_float64(ka, ce_weight, scale):
    student, teacher, target, temperature = sample(4, 9, torch.float64)
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
            backend="cpu",
        )

    assert torch.autograd.gradcheck(loss, (student,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    student, teacher, target, _ = sample(16, 37)

    def step(z, v, y):
        tau = F.dtd_temperature(z, v, t0=3.0, target=y, ka="ps", backend="cpu")
        return F.kd_loss(z, v, y, tau, ka="ps", ce_weight=0.5, backend="cpu")

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    z1 = student.clone().requires_grad_(True)
    z2 = student.clone().requires_grad_(True)
    eager = step(z1, teacher, target)
    eager.backward()
    traced = compiled(z2, teacher, target)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    torch.testing.assert_close(z2.grad, z1.grad)


def test_compiled_module_runs_without_graph_breaks():
    from tskd_fast.nn import KDLoss

    student, teacher, _, _ = sample(8, 20)
    criterion = KDLoss(T=4.0, backend="cpu")
    compiled = torch.compile(criterion, fullgraph=True, backend="aot_eager")
    z = student.clone().requires_grad_(True)
    out = compiled(z, teacher)
    out.backward()
    z_ref = student.clone().requires_grad_(True)
    criterion(z_ref, teacher).backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


def test_op_errors_name_the_argument():
    student, teacher, target, temperature = sample()
    op = torch.ops.tskd_fast.kd_loss.default
    with pytest.raises(RuntimeError, match="teacher_logits must have the shape"):
        op(student, teacher[:, :3], target, temperature, 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="temperature must have shape"):
        op(student, teacher, target, temperature[:2], 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="temperature must be Float"):
        op(student, teacher, target, temperature.double(), 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match=r"temperature\[2\] = -1 must be finite and > 0"):
        bad = temperature.clone()
        bad[2] = -1
        op(student, teacher, target, bad, 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="ka must be 0"):
        op(student, teacher, target, temperature, 5, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="needs target labels"):
        op(student, teacher, None, temperature, 1, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match=r"target\[3\] = 11 is out of range"):
        bad = target.clone()
        bad[3] = 11
        op(student, teacher, bad, temperature, 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="target must be int64"):
        op(student, teacher, target.int(), temperature, 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="empty batch"):
        op(student[:0], teacher[:0], None, temperature[:0], 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="must be float32, float16, bfloat16 or float64"):
        op(student.long(), teacher.long(), None, temperature, 0, 0.9, True, 0.0, -100, True)
    with pytest.raises(RuntimeError, match="lsr_p must be in"):
        op(student, teacher, target, temperature, 2, 1.5, True, 0.0, -100, True)
