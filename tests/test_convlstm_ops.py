"""The ConvLSTM gate ops as PyTorch ops: opcheck of every forward and backward op, float64
gradcheck of the CPU op, torch.compile(fullgraph=True), and the ops' own input checks."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tskd_fast import functional as F
from tskd_fast.ops import op_for

BACKENDS = kernel_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused backend built")


def sample(batch=2, hidden=3, height=4, width=5, dtype=torch.float32, device="cpu", channels_last=False):
    gates = torch.randn(batch, 4 * hidden, height, width, dtype=dtype, device=device) * 2
    c_prev = torch.randn(batch, hidden, height, width, dtype=dtype, device=device)
    if channels_last:
        gates = gates.contiguous(memory_format=torch.channels_last)
        c_prev = c_prev.contiguous(memory_format=torch.channels_last)
    ws = [torch.randn(hidden, height, width, dtype=dtype, device=device) * 0.5 for _ in range(3)]
    return gates, c_prev, ws


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_forward(backend, peepholes, channels_last):
    device = device_of(backend)
    op = op_for(backend, "convlstm_gates")
    gates, c_prev, ws = sample(device=device, channels_last=channels_last)
    gates.requires_grad_(True)
    c_prev.requires_grad_(True)
    if peepholes:
        ws = [w.requires_grad_(True) for w in ws]
        args = (gates, c_prev, ws[0], None, ws[2].unsqueeze(0).detach().requires_grad_(True))
    else:
        args = (gates, c_prev)
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_backward(backend, channels_last):
    device = device_of(backend)
    backward_op = op_for(backend, "convlstm_gates_backward")
    gates, c_prev, ws = sample(device=device, channels_last=channels_last)
    dh, dc = torch.randn_like(c_prev), torch.randn_like(c_prev)
    # The backward op is not differentiated again: no input asks for a gradient.
    for args in (
        (dh, dc, gates, c_prev, *ws, True),
        (None, dc, gates, c_prev, ws[0], None, None, True),
        (dh, None, gates, c_prev, None, None, None, False),
        (dh, dc, gates, c_prev, *ws, False),
    ):
        torch.library.opcheck(backward_op, args)


@pytest.mark.skipif("cpu" not in BACKENDS, reason="tskd_fast._C is not built")
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_float64_cpu(channels_last):
    gates, c_prev, ws = sample(2, 3, 3, 4, torch.float64, channels_last=channels_last)
    inputs = [t.requires_grad_(True) for t in (gates, c_prev, *ws)]

    def cell(*args):
        return F.convlstm_gates(*args, backend="cpu")

    assert torch.autograd.gradcheck(cell, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)
    # Only h used (grad_c absent) and no peepholes.
    assert torch.autograd.gradcheck(lambda g, c: cell(g, c)[0], inputs[:2], eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph_matches_eager(backend):
    device = device_of(backend)
    gates, c_prev, ws = sample(device=device)
    x = torch.randn(2, 4 * 3, 4, 5, device=device)

    def step(g, c, w_ci, w_co):
        h, c_new = F.convlstm_gates(g + x, c, w_ci, None, w_co, backend=backend)
        h2, c2 = F.convlstm_gates(g * 0.5, c_new, backend=backend)  # a second step, no peepholes
        return (h * h2).sum() + c2.square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if backend == "triton" else "inductor")
    eager_in = [t.clone().requires_grad_(True) for t in (gates, c_prev, ws[0], ws[2])]
    traced_in = [t.clone().requires_grad_(True) for t in (gates, c_prev, ws[0], ws[2])]
    eager = step(*eager_in)
    eager.backward()
    traced = compiled(*traced_in)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    for a, b in zip(traced_in, eager_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_errors_name_the_argument(backend):
    device = device_of(backend)
    op, backward_op = op_for(backend, "convlstm_gates"), op_for(backend, "convlstm_gates_backward")
    gates, c_prev, ws = sample(device=device)
    with pytest.raises(ValueError, match=r"gates must have shape \(B, 4\*C_h, H, W\) = \(2, 12, 4, 5\)"):
        op(gates[:, :11], c_prev)
    with pytest.raises(ValueError, match="c_prev must be 4-D"):
        op(gates, c_prev[0])
    with pytest.raises(
        ValueError, match=r"c_prev must have the dtype of gates \(torch.float32\), got torch.float16"
    ):
        op(gates, c_prev.half())
    with pytest.raises(ValueError, match="gates must be float32, float16, bfloat16 or float64"):
        op(gates.int(), c_prev.int())
    with pytest.raises(ValueError, match=r"w_cf must have shape \(C_h, H, W\) = \(3, 4, 5\)"):
        op(gates, c_prev, None, ws[1][:, :3])
    with pytest.raises(ValueError, match="w_co must have the dtype of gates"):
        op(gates, c_prev, None, None, ws[2].double())
    dh = torch.randn_like(c_prev)
    with pytest.raises(ValueError, match="grad_h must have the shape of c_prev"):
        backward_op(dh[:1], None, gates, c_prev, None, None, None, False)
    with pytest.raises(ValueError, match="grad_c must have the dtype of gates"):
        backward_op(None, dh.double(), gates, c_prev, None, None, None, False)
