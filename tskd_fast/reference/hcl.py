"""ReviewKD's hierarchical context loss (HCL) in plain PyTorch (docs/methods.md §2.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_LEVELS = (4, 2, 1)


def hcl_pair(fs: torch.Tensor, ft: torch.Tensor, levels: Sequence[int] = DEFAULT_LEVELS) -> torch.Tensor:
    """The HCL of one stage pair fs, ft (N, C, H, W): a 0-d tensor in fs's dtype.

    (MSE(fs, ft) + sum_l w_l MSE(pool_l(fs), pool_l(ft))) / (1 + sum_l w_l), where l runs over
    `levels` in order, skipping l >= H, with weights halving 0.5, 0.25, ... over the included
    levels, and pool_l is adaptive average pooling to l x l. No gradient reaches ft.
    """
    ft = ft.detach()
    loss = F.mse_loss(fs, ft)
    weight, tot = 1.0, 1.0
    for level in levels:
        if level >= fs.shape[2]:
            continue
        weight /= 2.0
        pooled = F.mse_loss(
            F.adaptive_avg_pool2d(fs, (level, level)), F.adaptive_avg_pool2d(ft, (level, level))
        )
        loss = loss + weight * pooled
        tot += weight
    return loss / tot


def hcl_loss(
    student_feats: Sequence[torch.Tensor] | torch.Tensor,
    teacher_feats: Sequence[torch.Tensor] | torch.Tensor,
    levels: Sequence[int] = DEFAULT_LEVELS,
) -> torch.Tensor:
    """The plain sum over stage pairs of hcl_pair (ReviewKD's `hcl`); a single tensor pair is
    one stage. Returns a 0-d tensor in the first student feature's dtype."""
    if isinstance(student_feats, torch.Tensor):
        student_feats, teacher_feats = [student_feats], [teacher_feats]
    total = None
    for fs, ft in zip(student_feats, teacher_feats, strict=True):
        term = hcl_pair(fs, ft, levels)
        total = term if total is None else total + term
    return total
