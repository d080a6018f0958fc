"""Dynamic temperature distillation (DTD) temperatures in plain PyTorch (docs/methods.md §1.4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tskd_fast.reference.kd_loss import _opmath, probability_shift

FLSW_NORM_EPS = 1e-4
CWSM_EPS = 1e-3


def dtd_weight(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    mode: str = "flsw",
    gamma: float = 2.0,
    ka: str = "none",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Per-row weight w (B,): flsw (1 - cos(z, v))^gamma or cwsm 1 / (max softmax(z) + 1e-3).

    flsw sees the probability-shifted teacher when ka == "ps"; label smoothing replaces the
    target distribution, not the logits, so with ka == "lsr" the teacher logits are used as given.
    """
    opmath = _opmath(student_logits.dtype)
    z = student_logits.detach().to(opmath)
    if mode == "cwsm":
        return 1.0 / (F.softmax(z, dim=1).amax(dim=1) + CWSM_EPS)
    v = teacher_logits.detach().to(opmath)
    if ka == "ps":
        v = probability_shift(v, target, ignore_index)
    zn = z / (z.norm(dim=1, keepdim=True) + FLSW_NORM_EPS)
    vn = v / (v.norm(dim=1, keepdim=True) + FLSW_NORM_EPS)
    gap = (1.0 - (zn * vn).sum(dim=1)).clamp(0.0, 2.0)
    return gap.pow(gamma)


def temperatures_from_weights(
    w: torch.Tensor, t0: float, beta: float, min_temperature: float
) -> torch.Tensor:
    """tau_n = max(t0 + beta (mean(w) - w_n), min_temperature) from the DTD weights w (B,).

    Rows whose weight is not finite (NaN or inf logits) are left out of the mean and get tau = t0,
    so that one such row changes no other row's temperature (its loss is NaN anyway) and every
    temperature stays finite and > 0: no error on the CPU, no device assert on CUDA. Decided on
    the device, without a host sync.
    """
    if w.device.type == "cpu" and not torch.compiler.is_compiling():
        # Host checks are free on the CPU: when the mean is finite every weight is, and the
        # masked form below (ten small ops, most of a small batch's DTD time) is not needed.
        mean = w.mean()
        if math.isfinite(float(mean)):
            return torch.sub(mean, w).mul_(beta).add_(t0).clamp_min_(min_temperature)
    finite = torch.isfinite(w)
    count = finite.sum().clamp_min(1).to(w.dtype)
    mean = torch.where(finite, w, 0.0).sum() / count
    tau = torch.where(finite, t0 + beta * (mean - w), t0)
    return tau.clamp_min(min_temperature)


def dtd_temperature(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    t0: float = 4.0,
    beta: float = 1.0,
    gamma: float = 2.0,
    mode: str = "flsw",
    min_temperature: float = 0.1,
    target: torch.Tensor | None = None,
    ka: str = "none",
    ignore_index: int = -100,
) -> torch.Tensor:
    """tau_n = max(t0 + beta (mean(w) - w_n), min_temperature), (B,), without gradient; rows with a
    non-finite w get t0 and stay out of the mean (temperatures_from_weights)."""
    with torch.no_grad():
        w = dtd_weight(student_logits, teacher_logits, target, mode, gamma, ka, ignore_index)
        return temperatures_from_weights(w, t0, beta, min_temperature)
