"""The ABF-fusion ops as PyTorch ops: opcheck of every backend's forward and backward op, float64
gradcheck of the CPU op, torch.compile(fullgraph=True), and the ops' own input checks."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.ops import op_for

BACKENDS = kernel_backends()


def sample(backend="cpu", dtype=torch.float32, shape=(2, 5, 7, 7), residual=(3, 3), channels_last=False):
    device = device_of(backend)
    n, m, h, w = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, m, h, w, dtype=dtype, device=device).contiguous(memory_format=fmt)
    y = torch.randn(n, m, *residual, dtype=dtype, device=device).contiguous(memory_format=fmt)
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    weight = torch.randn(2, 2 * m, dtype=opmath, device=device) / m**0.5
    bias = torch.randn(2, dtype=opmath, device=device)
    return x, y, weight, bias


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(backend, channels_last, dtype):
    forward_op, backward_op = op_for(backend, "abf_fuse"), op_for(backend, "abf_fuse_backward")
    x, y, weight, bias = sample(backend, dtype, channels_last=channels_last)
    args = [t.requires_grad_(True) for t in (x, y, weight, bias)]
    torch.library.opcheck(forward_op, tuple(args))
    fused, gates = forward_op(*(a.detach() for a in args))
    grad = torch.randn_like(fused)
    torch.library.opcheck(
        backward_op,
        (grad, x.detach(), y.detach(), weight.detach(), gates),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_gradcheck_float64_cpu():
    if "cpu" not in BACKENDS:
        pytest.skip("tskd_fast._C is not built")
    for channels_last in (False, True):
        x, y, weight, bias = sample("cpu", torch.float64, (1, 3, 5, 7), (2, 3), channels_last)
        inputs = tuple(t.requires_grad_(True) for t in (x, y, weight, bias))
        assert torch.autograd.gradcheck(
            lambda *a: F.abf_fuse(*a, backend="cpu"), inputs, eps=1e-6, atol=1e-7, rtol=1e-5
        )


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_torch_compile_fullgraph_matches_eager(backend):
    x, y, weight, bias = sample(backend)

    def step(x, y, weight, bias):
        return (F.abf_fuse(x, y, weight, bias, backend=backend) ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    eager_in = [t.clone().requires_grad_(True) for t in (x, y, weight, bias)]
    traced_in = [t.clone().requires_grad_(True) for t in (x, y, weight, bias)]
    eager = step(*eager_in)
    eager.backward()
    traced = compiled(*traced_in)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    for a, b in zip(traced_in, eager_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_no_grad_matches_reference():
    x, y, weight, bias = sample()
    with torch.no_grad():
        torch.testing.assert_close(
            F.abf_fuse(x, y, weight, bias, backend="cpu"), reference.abf_fuse(x, y, weight, bias)
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_errors_name_the_argument(backend):
    forward_op, backward_op = op_for(backend, "abf_fuse"), op_for(backend, "abf_fuse_backward")
    x, y, weight, bias = sample(backend)
    with pytest.raises(ValueError, match=r"y \(the residual\) has 3 channels but x has 5"):
        forward_op(x, y[:, :3], weight, bias)
    with pytest.raises(ValueError, match=r"y \(the residual\) has batch size 1 but x has 2"):
        forward_op(x, y[:1], weight, bias)
    with pytest.raises(ValueError, match="must be at most as large"):
        forward_op(x[:, :, :2], y, weight, bias)
    with pytest.raises(ValueError, match=r"weight must have shape \(2, 2M\)"):
        forward_op(x, y, weight[:, :3], bias)
    with pytest.raises(ValueError, match="weight must be torch.float32, got torch.float64"):
        forward_op(x, y, weight.double(), bias)
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        forward_op(x, y, weight, bias[:1])
    with pytest.raises(ValueError, match="y must be torch.float32, got torch.float64"):
        forward_op(x, y.double(), weight, bias)
    with pytest.raises(ValueError, match="x must be 4-D"):
        forward_op(x[0], y, weight, bias)
    with pytest.raises(ValueError, match="x is empty"):
        forward_op(x[:0], y[:0], weight, bias)
    with pytest.raises(ValueError, match="x must be float32, float16, bfloat16 or float64"):
        forward_op(x.long(), y.long(), weight, bias)
    fused, gates = forward_op(x, y, weight, bias)
    with pytest.raises(ValueError, match="gates must have shape"):
        backward_op(fused, x, y, weight, gates[:, :3])
    with pytest.raises(ValueError, match="grad must have the shape of x"):
        backward_op(fused[:1], x, y, weight, gates)
