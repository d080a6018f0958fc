"""The nn modules: KDLoss is a drop-in for DistillKL; DTDKDLoss composes DTD, KA and the loss."""

import torch
import torch.nn.functional as torch_f

from tskd_fast import functional as F
from tskd_fast.nn import DTDKDLoss, DTDTemperature, KDLoss


def distill_kl(y_s, y_t, T):
    """The DistillKL module of RepDistiller / ReviewKD / TSKD, written out."""
    p_s = torch_f.log_softmax(y_s / T, dim=1)
    p_t = torch_f.softmax(y_t / T, dim=1)
    return torch_f.kl_div(p_s, p_t, reduction="sum") * (T**2) / y_s.shape[0]


def test_kd_loss_equals_distill_kl_value_and_gradient():
    for T in (1.0, 4.0, 7.5):
        y_s = (torch.randn(32, 100) * 3).requires_grad_(True)
        y_t = torch.randn(32, 100) * 3
        ours = KDLoss(T)(y_s, y_t)
        (g_ours,) = torch.autograd.grad(ours, y_s)
        theirs = distill_kl(y_s, y_t, T)
        (g_theirs,) = torch.autograd.grad(theirs, y_s)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-7)


def test_mdistiller_style_weighted_kd():
    # mdistiller: CE weight 0.1 on the hard label plus KD weight 0.9 at T = 4.
    y_s = torch.randn(16, 10, requires_grad=True)
    y_t = torch.randn(16, 10)
    y = torch.randint(0, 10, (16,))
    ours = 0.9 * KDLoss(4.0, ce_weight=0.1 / 0.9)(y_s, y_t, y)
    theirs = 0.1 * torch_f.cross_entropy(y_s, y) + 0.9 * distill_kl(y_s, y_t, 4.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_dtd_kd_loss_composes_temperature_and_loss():
    y_s = torch.randn(12, 20, requires_grad=True)
    y_t = torch.randn(12, 20)
    y = torch.randint(0, 20, (12,))
    module = DTDKDLoss(t0=4.0, beta=1.5, gamma=2.0, mode="flsw", ka="ps", ce_weight=0.2)
    loss = module(y_s, y_t, y)
    tau = DTDTemperature(4.0, 1.5, 2.0, "flsw", ka="ps")(y_s, y_t, y)
    torch.testing.assert_close(module.last_temperature, tau)
    manual = F.kd_loss(y_s, y_t, y, tau, ka="ps", ce_weight=0.2, backend="reference")
    torch.testing.assert_close(loss, manual, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert y_s.grad is not None and torch.isfinite(y_s.grad).all()


def test_invalid_temperature_is_rejected_at_construction():
    import pytest

    with pytest.raises(ValueError, match="T must be > 0"):
        KDLoss(0.0)
