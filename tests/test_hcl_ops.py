"""The HCL ops as PyTorch ops: opcheck of every backend's op, float64 gradcheck of the CPU op,
torch.compile(fullgraph=True) of ABF fusion and HCL together, and the ops' own input checks."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tskd_fast import functional as F
from tskd_fast.ops import op_for

BACKENDS = kernel_backends()


def pair(backend="cpu", dtype=torch.float32, shape=(2, 3, 7, 7), channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    fs = torch.randn(shape, dtype=dtype, device=device_of(backend)).contiguous(memory_format=fmt)
    ft = torch.randn(shape, dtype=dtype, device=device_of(backend)).contiguous(memory_format=fmt)
    return fs, ft


# The Triton interpreter runs a program per plane and opcheck calls the op many times: float32
# only and a small map there.
OPCHECK_CASES = [
    (b, dtype)
    for b in BACKENDS
    for dtype in (torch.float32, torch.bfloat16)
    if b != "triton" or dtype == torch.float32
]


@pytest.mark.parametrize("backend,dtype", OPCHECK_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(backend, channels_last, dtype):
    op = op_for(backend, "hcl_loss")
    shape = (1, 2, 3, 5) if backend == "triton" else (2, 3, 7, 7)
    fs, ft = pair(backend, dtype, shape, channels_last)
    torch.library.opcheck(op, ([fs.requires_grad_(True)], [ft], [4, 2, 1], [True], 1.0))
    torch.library.opcheck(op, ([fs.detach()], [ft], [3], [False]))
    if backend != "triton":
        # Two stage pairs of different sizes, one of them without a gradient.
        gs, gt = pair(backend, dtype, (2, 3, 4, 4), channels_last)
        torch.library.opcheck(op, ([fs, gs.detach()], [ft, gt], [4, 2, 1], [True, False], 0.5))


def test_gradcheck_float64_cpu():
    if "cpu" not in BACKENDS:
        pytest.skip("tskd_fast._C is not built")
    for shape, channels_last in (((2, 3, 7, 7), False), ((1, 18, 5, 6), True), ((2, 2, 1, 1), False)):
        fs, ft = pair("cpu", torch.float64, shape, channels_last)
        fs.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda z, t=ft: F.hcl_loss(z, t, backend="cpu"), (fs,), eps=1e-6, atol=1e-8, rtol=1e-5
        )
    # Several pairs (one autograd node for all of them when eager).
    (a, ta), (b, tb) = (
        pair("cpu", torch.float64, (2, 3, 8, 8), False),
        pair("cpu", torch.float64, (1, 2, 5, 7), False),
    )
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, y: F.hcl_loss([x, y], [ta, tb], backend="cpu"), (a, b), eps=1e-6, atol=1e-8, rtol=1e-5
    )


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_torch_compile_fullgraph_abf_then_hcl(backend):
    device = device_of(backend)
    x = torch.randn(2, 4, 8, 8, device=device)
    y = torch.randn(2, 4, 4, 4, device=device)
    weight = torch.randn(2, 8, device=device)
    bias = torch.randn(2, device=device)
    teachers = [torch.randn(2, 4, 8, 8, device=device), torch.randn(2, 4, 4, 4, device=device)]

    def step(x, y):
        fused = F.abf_fuse(x, y, weight, bias, backend=backend)
        return F.hcl_loss([fused, y], teachers, backend=backend)

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    xe, ye = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    xc, yc = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    eager = step(xe, ye)
    eager.backward()
    traced = compiled(xc, yc)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    torch.testing.assert_close(xc.grad, xe.grad)
    torch.testing.assert_close(yc.grad, ye.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_errors_name_the_argument(backend):
    op = op_for(backend, "hcl_loss")
    fs, ft = pair(backend)
    with pytest.raises(ValueError, match=r"teacher_feats\[0\] has 2 channels but student_feats\[0\] has 3"):
        op([fs], [ft[:, :2]], [4, 2, 1], [True])
    with pytest.raises(
        ValueError, match=r"teacher_feats\[0\] has spatial size \(7, 6\) but student_feats\[0\]"
    ):
        op([fs], [ft[..., :6]], [4, 2, 1], [True])
    with pytest.raises(ValueError, match=r"teacher_feats\[1\] must be torch.float32, got torch.float64"):
        op([fs, fs], [ft, ft.double()], [4, 2, 1], [True, True])
    with pytest.raises(ValueError, match=r"levels must all be >= 1 \(pooled sizes\), got \(4, 0\)"):
        op([fs], [ft], [4, 0], [True])
    with pytest.raises(ValueError, match="at most 8 levels"):
        op([fs], [ft], [1] * 9, [True])
    with pytest.raises(ValueError, match=r"student_feats\[0\] must be 4-D"):
        op([fs[0]], [ft[0]], [4], [True])
    with pytest.raises(ValueError, match=r"student_feats\[0\] is empty"):
        op([fs[:0]], [ft[:0]], [4], [True])
    with pytest.raises(ValueError, match="grad_scale must be finite"):
        op([fs], [ft], [4], [True], float("inf"))
    with pytest.raises(ValueError, match="student_feats has 1 levels but teacher_feats has 2"):
        op([fs], [ft, ft], [4], [True])
    with pytest.raises(ValueError, match=r"compute_grad must have one flag per stage pair \(1\), got 2"):
        op([fs], [ft], [4], [True, True])


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton cannot run here")
def test_torch_compile_fullgraph_triton_ops():
    """The Triton ops trace without graph breaks (aot_eager keeps the interpreted run small)."""
    device = device_of("triton")
    x = torch.randn(1, 3, 4, 4, device=device)
    y = torch.randn(1, 3, 2, 2, device=device)
    weight = torch.randn(2, 6, device=device)
    bias = torch.randn(2, device=device)
    teacher = torch.randn(1, 3, 4, 4, device=device)

    def step(x, y):
        return F.hcl_loss(F.abf_fuse(x, y, weight, bias, backend="triton"), teacher, backend="triton")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    xe, ye = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    xc, yc = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    step(xe, ye).backward()
    compiled(xc, yc).backward()
    torch.testing.assert_close(xc.grad, xe.grad)
    torch.testing.assert_close(yc.grad, ye.grad)
