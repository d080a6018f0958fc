"""ReviewKD's hierarchical context loss (HCL) as a module over the fused op."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tskd_fast import functional as F


class HCLLoss(nn.Module):
    """Sum over stage pairs of ReviewKD's ``hcl`` (docs/methods.md §2.4): per pair
    (MSE + sum_l w_l MSE of l x l adaptive average pools) / (1 + sum_l w_l), with l in ``levels``
    (skipping l >= H) and weights 0.5, 0.25, ... The teacher gets no gradient.

    forward(student_feats, teacher_feats) -> 0-d loss in the student features' dtype. Both are
    equally long sequences of (N, C_i, H_i, W_i) tensors (float32/16/bfloat16, float64 on the CPU),
    of matching shapes level by level; bad input raises ValueError naming the argument.
    """

    def __init__(self, levels: Sequence[int] = (4, 2, 1), backend: str = "auto") -> None:
        super().__init__()
        levels = tuple(levels)
        if not levels or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in levels):
            raise ValueError(f"levels must be a non-empty sequence of positive ints, got {levels!r}")
        self.levels = levels
        self.backend = backend

    def forward(
        self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        return F.hcl_loss(student_feats, teacher_feats, levels=self.levels, backend=self.backend)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, backend={self.backend!r}"


__all__ = ["HCLLoss"]
