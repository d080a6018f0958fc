"""The KD loss with dynamic temperatures and knowledge adjustment, in plain PyTorch (docs/methods.md §1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _wrong_rows(teacher: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """(B,) bool: rows with a usable label that the teacher's argmax gets wrong."""
    return (target != ignore_index) & (teacher.argmax(dim=1) != target)


def probability_shift(teacher: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Teacher logits (B, C) with the argmax and label entries swapped on wrongly predicted rows.

    Swapping logits before the softmax equals swapping probabilities after it (softmax is
    permutation-equivariant), at any temperature.
    """
    wrong = _wrong_rows(teacher, target, ignore_index)
    rows = torch.arange(teacher.shape[0], device=teacher.device)
    argmax = teacher.argmax(dim=1)
    label = torch.where(wrong, target, argmax)  # a no-op swap on the other rows
    shifted = teacher.clone()
    at_argmax = teacher[rows, argmax]
    at_label = teacher[rows, label]
    shifted[rows, argmax] = at_label
    shifted[rows, label] = at_argmax
    return shifted


def kd_target(
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    ka: str = "none",
    lsr_p: float = 0.9,
    ignore_index: int = -100,
) -> torch.Tensor:
    """The target distribution q (B, C): softmax(teacher / tau) after knowledge adjustment.

    temperature: (B,). ka: "none", "ps" (probability shift) or "lsr" (label smoothing with
    lsr_p on the label). Only rows whose teacher argmax differs from a usable label change.
    """
    tau = temperature.to(teacher.dtype).unsqueeze(1)
    if ka == "ps":
        return F.softmax(probability_shift(teacher, target, ignore_index) / tau, dim=1)
    q = F.softmax(teacher / tau, dim=1)
    if ka == "lsr":
        classes = teacher.shape[1]
        off = (1.0 - lsr_p) / (classes - 1) if classes > 1 else 0.0
        safe = torch.where(target == ignore_index, 0, target)
        smoothed = torch.full_like(q, off).scatter_(1, safe.unsqueeze(1), lsr_p)
        q = torch.where(_wrong_rows(teacher, target, ignore_index).unsqueeze(1), smoothed, q)
    return q


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    temperature: float | torch.Tensor = 4.0,
    ka: str = "none",
    lsr_p: float = 0.9,
    scale: str = "tau2",
    ce_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """Reference of tskd_fast.functional.kd_loss (same arguments and semantics, no checks).

    Per row: s * KL(q || softmax(z / tau)) + ce_weight * CE(z, y), s = tau^2 ("tau2") or 1, with
    the convention 0 log 0 = 0. Computed in float32 (float64 for float64 logits); no gradient
    reaches the teacher or the temperature.
    """
    opmath = _opmath(student_logits.dtype)
    z = student_logits.to(opmath)
    v = teacher_logits.detach().to(opmath)
    rows = z.shape[0]
    if isinstance(temperature, torch.Tensor):
        tau = temperature.detach().to(device=z.device, dtype=opmath).expand(rows)
    else:
        tau = torch.full((rows,), float(temperature), dtype=opmath, device=z.device)
    q = kd_target(v, target, tau, ka, lsr_p, ignore_index).detach()
    log_p = F.log_softmax(z / tau.unsqueeze(1), dim=1)
    log_q = torch.log(q)
    # 0 log 0 = 0 only where q is exactly 0, so a NaN target (a row of -inf) stays NaN.
    pointwise = torch.where(q == 0, torch.zeros_like(q), q * (log_q - log_p))
    row = pointwise.sum(dim=1)
    if scale == "tau2":
        row = row * tau.square()
    if ce_weight != 0.0:
        row = row + ce_weight * F.cross_entropy(z, target, reduction="none", ignore_index=ignore_index)
    if reduction == "batchmean":
        out = row.sum() / rows
    elif reduction == "sum":
        out = row.sum()
    else:
        out = row
    return out.to(student_logits.dtype)
