"""Which backward the gradient-writing ops take (kd_loss, hcl_loss): the saved gradient handed on
untouched only for eager CPU tensors whose incoming gradient times the reduction's factor is
exactly grad_scale; a scaling pass into a new tensor on every other device (CUDA: no host sync)
and whenever traced or faked. The C++ formula (csrc/autograd/saved_gradient.cpp, the C++ ops) and
the Python one (tskd_fast.ops.common.scale_saved_gradient, the Triton ops) give identical
gradients."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

from tests.conftest import kernel_backends
from tskd_fast.ops import common, op_for

HAS_CPP = "cpu" in kernel_backends()


def test_cpu_hands_the_saved_gradient_on_when_the_incoming_one_is_grad_scale():
    row_grad = torch.randn(4, 7)
    assert common.scale_saved_gradient(row_grad, torch.full((4,), 0.25), 1.0, 0.25) is row_grad
    # A mean: incoming 1 times the reduction's 1/B equals grad_scale = 1/B.
    assert common.scale_saved_gradient(row_grad, torch.tensor(1.0), 1.0 / 49, 1.0 / 49) is row_grad


def test_cpu_scales_into_a_new_tensor_otherwise():
    row_grad = torch.randn(4, 7)
    incoming = torch.tensor([0.25, 0.5, 0.25, 0.25])
    grad = common.scale_saved_gradient(row_grad, incoming, 1.0, 0.25)
    assert grad.data_ptr() != row_grad.data_ptr()
    torch.testing.assert_close(grad, row_grad * (incoming / 0.25)[:, None])
    grad = common.scale_saved_gradient(row_grad, torch.tensor(3.0), 0.5, 0.25)
    torch.testing.assert_close(grad, row_grad * 6.0)


def test_values_are_read_only_on_eager_cpu_tensors(monkeypatch):
    """Off the CPU the check never reads values (which on CUDA would synchronise the stream):
    meta tensors stand for them here, since reading a meta tensor's values raises."""
    assert common.values_readable(torch.full((3,), 0.5))
    assert not common.values_readable(torch.full((3,), 0.5, device="meta"))
    with FakeTensorMode():
        assert not common.values_readable(torch.full((3,), 0.5))
    # A torch without the dispatch-mode internals only loses the shortcut.
    monkeypatch.setattr(common, "_get_dispatch_mode", None)
    assert not common.values_readable(torch.full((3,), 0.5))


def test_off_the_cpu_backward_writes_a_new_scaled_tensor():
    row_grad = torch.empty(4, 7, device="meta", dtype=torch.bfloat16)
    grad = common.scale_saved_gradient(row_grad, torch.empty(4, device="meta"), 1.0, 0.25)
    assert grad is not row_grad and grad.shape == row_grad.shape and grad.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# The C++ formula, through the C++ op's autograd kernel

needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="tskd_fast._C is not built")


def kd_call(z, reduction, grad_scale):
    teacher = torch.randn(z.shape, dtype=z.dtype)
    tau = torch.full((z.shape[0],), 2.0, dtype=torch.float64 if z.dtype == torch.float64 else torch.float32)
    return op_for("cpu", "kd_loss")(
        z, teacher, None, tau, 0, 0.9, True, 0.0, -100, True, grad_scale, reduction
    )


@needs_cpp
def test_cpp_backward_hands_the_saved_gradient_on():
    z = torch.randn(6, 9, requires_grad=True)
    loss, row_grad = kd_call(z, 2, 1.0 / 6)
    (grad,) = torch.autograd.grad(loss, z)
    assert grad.data_ptr() == row_grad.data_ptr()
    loss, row_grad = kd_call(z, 0, 1.0)
    (grad,) = torch.autograd.grad(loss, z, torch.ones(6).expand(6))
    assert grad.data_ptr() == row_grad.data_ptr()


@needs_cpp
def test_cpp_backward_scales_otherwise():
    z = torch.randn(6, 9, requires_grad=True)
    loss, row_grad = kd_call(z, 2, 1.0 / 6)
    (grad,) = torch.autograd.grad(loss * 3.0, z)
    assert grad.data_ptr() != row_grad.data_ptr()
    torch.testing.assert_close(grad, row_grad * 3.0)


@needs_cpp
@pytest.mark.parametrize("reduction,grad_scale", [(0, 1.0), (1, 1.0), (2, 1.0 / 6), (2, 0.5)])
@pytest.mark.parametrize("incoming", ["ones", "scaled", "random"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_cpp_and_python_formulas_give_identical_gradients(reduction, grad_scale, incoming, dtype):
    z = (torch.randn(6, 9) * 2).to(dtype).requires_grad_(True)
    loss, row_grad = kd_call(z, reduction, grad_scale)
    g = {
        "ones": torch.ones_like(loss),
        "scaled": torch.full_like(loss, 0.75),
        "random": torch.rand_like(loss) + 0.5,
    }[incoming]
    (cpp,) = torch.autograd.grad(loss, z, g)
    weight = 1.0 / 6 if reduction == 2 else 1.0
    python = common.scale_saved_gradient(row_grad.detach(), g, weight, grad_scale)
    assert cpp.dtype == python.dtype == dtype
    assert torch.equal(cpp, python)


@needs_cpp
def test_traced_cpp_backward_never_reads_the_incoming_gradient():
    """Under make_fx (a tracing dispatch mode) the backward records the scaling ops instead of
    handing the saved gradient on: a value read would bake one call's numbers into the graph."""

    def grad_of(z):
        loss, _ = kd_call(z, 2, 1.0 / 6)
        return torch.autograd.grad(loss, z)[0]

    z = torch.randn(6, 9, requires_grad=True)
    for mode in ("real", "fake"):
        graph = make_fx(grad_of, tracing_mode=mode)(z)
        targets = {str(node.target) for node in graph.graph.nodes if node.op == "call_function"}
        assert any("mul" in t for t in targets), (mode, targets)
