"""Evaluation of a model on a (possibly sharded) test loader: top-1, top-5 and mean cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tskd_fast.engine.amp import autocast
from tskd_fast.engine.distributed import DistContext


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    ctx: DistContext,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean CE of ``model`` over every rank's shard of ``loader``.

    ``model(images)`` gives (B, K) logits for the loader's (B, C, H, W) images and (B,) int64
    labels. Returns {"loss", "top1", "top5"} summed exactly over ranks (top5 only with >= 5
    classes); the model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # loss sum, top1, top5, count
    with_top5 = True
    for images, target in loader:
        images = images.to(ctx.device, non_blocking=True)
        target = target.to(ctx.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(ctx.device, dtype):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        with_top5 = logits.shape[1] >= 5
        top = logits.topk(k, dim=1).indices
        hits = top.eq(target[:, None])
        totals[0] += nn.functional.cross_entropy(logits, target, reduction="sum").double()
        totals[1] += hits[:, 0].sum()
        totals[2] += hits.any(dim=1).sum()
        totals[3] += target.numel()
    ctx.all_reduce_sum(totals)
    model.train(was_training)
    n = max(totals[3].item(), 1.0)
    out = {"loss": totals[0].item() / n, "top1": 100.0 * totals[1].item() / n}
    if with_top5:
        out["top5"] = 100.0 * totals[2].item() / n
    return out


__all__ = ["evaluate"]
