"""Which backward the KD-loss ops take (tskd_fast.ops.kd_loss): the saved gradient handed on
untouched only for eager CPU tensors whose incoming gradient is exactly grad_scale; a scaling pass
into a new tensor on every other device (CUDA: no host sync) and whenever traced or faked."""

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from tskd_fast.ops import kd_loss as ops_kd


class _Ctx:
    """The autograd context kd_loss_setup_context fills."""

    def __init__(self, row_grad, grad_scale):
        self.saved_tensors = (row_grad,)
        self.num_inputs = 11
        self.compute_grad = True
        self.grad_scale = grad_scale


def test_cpu_hands_the_saved_gradient_on_when_the_incoming_one_is_grad_scale():
    row_grad = torch.randn(4, 7)
    grad, *rest = ops_kd.kd_loss_backward(_Ctx(row_grad, 0.25), torch.full((4,), 0.25), None)
    assert grad is row_grad and rest == [None] * 10


def test_cpu_scales_into_a_new_tensor_otherwise():
    row_grad = torch.randn(4, 7)
    incoming = torch.tensor([0.25, 0.5, 0.25, 0.25])
    grad, *_ = ops_kd.kd_loss_backward(_Ctx(row_grad, 0.25), incoming, None)
    assert grad.data_ptr() != row_grad.data_ptr()
    torch.testing.assert_close(grad, row_grad * (incoming / 0.25)[:, None])


def test_values_are_read_only_on_eager_cpu_tensors(monkeypatch):
    """Off the CPU the check never reads values (which on CUDA would synchronise the stream):
    meta tensors stand for them here, since reading a meta tensor's values raises."""
    assert ops_kd._incoming_is_grad_scale(torch.full((3,), 0.5), 0.5)
    assert not ops_kd._incoming_is_grad_scale(torch.full((3,), 0.5, device="meta"), 0.5)
    with FakeTensorMode():
        assert not ops_kd._incoming_is_grad_scale(torch.full((3,), 0.5), 0.5)
    # A torch without the dispatch-mode internals only loses the shortcut.
    monkeypatch.setattr(ops_kd, "_get_dispatch_mode", None)
    assert not ops_kd._incoming_is_grad_scale(torch.full((3,), 0.5), 0.5)


def test_off_the_cpu_backward_writes_a_new_scaled_tensor():
    row_grad = torch.empty(4, 7, device="meta", dtype=torch.bfloat16)
    grad, *_ = ops_kd.kd_loss_backward(_Ctx(row_grad, 0.25), torch.empty(4, device="meta"), None)
    assert grad is not row_grad and grad.shape == row_grad.shape and grad.dtype == torch.bfloat16
