"""The KD loss module: KDLoss, a drop-in for DistillKL (the DTD modules are in tskd_fast.nn.dtd)."""

from __future__ import annotations

import torch
from torch import nn

from tskd_fast import functional as F


class KDLoss(nn.Module):
    """Hinton's KD loss, T^2 * KL(softmax(v / T) || softmax(z / T)) averaged over the batch.

    With the defaults it has the value and gradient of the `DistillKL(T)` module of RepDistiller,
    ReviewKD and TSKD (and of mdistiller's `kd_loss`); ka, ce_weight and the other options are
    those of tskd_fast.functional.kd_loss.

    forward(student_logits (B, C), teacher_logits (B, C), target (B,) or None) -> loss
    """

    def __init__(
        self,
        T: float = 4.0,
        ka: str = "none",
        lsr_p: float = 0.9,
        scale: str = "tau2",
        ce_weight: float = 0.0,
        ignore_index: int = -100,
        reduction: str = "batchmean",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not (T > 0):
            raise ValueError(f"T must be > 0, got {T}")
        self.T = float(T)
        self.ka, self.lsr_p, self.scale = ka, lsr_p, scale
        self.ce_weight, self.ignore_index = ce_weight, ignore_index
        self.reduction, self.backend = reduction, backend

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.kd_loss(
            student_logits,
            teacher_logits,
            target,
            temperature=self.T,
            ka=self.ka,
            lsr_p=self.lsr_p,
            scale=self.scale,
            ce_weight=self.ce_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"T={self.T}, ka={self.ka!r}, scale={self.scale!r}, ce_weight={self.ce_weight}"
