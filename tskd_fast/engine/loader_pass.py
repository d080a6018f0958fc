"""One pass over the training loader, shared by a training epoch and a distiller's phase pass
(TST's augmentation search): the pass's own data order, the batches moved to the device, a step
per batch, and the step's values summed over every process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from tskd_fast.engine.distributed import DistContext

# step(images, target, index) -> {name: sum of the value over the batch's rows}
Step = Callable[[Tensor, Tensor, int], dict[str, Tensor]]
# postfix(sums of the step, rows in the batch) -> what the progress bar shows after it
Postfix = Callable[[dict[str, Tensor], int], dict[str, str]]


def pass_seed(seed: int, key: int, rank: int) -> int:
    """The loader's worker seed of pass ``key`` (an epoch or a phase pass's key) on ``rank``:
    distinct and reproducible per (seed, key, rank), independent of the passes before it."""
    return (seed * 1_000_003 + key * 10_007 + rank * 101 + 12_345) % (2**63)


def phase_key(epoch: int, index: int) -> int:
    """The data-order key of phase pass ``index`` before ``epoch``: distinct from every epoch's."""
    return 1_000_003 * (index + 1) + epoch


@dataclass
class PassTotals:
    """The sums of a pass's step values over every process, and the rows they cover."""

    sums: dict[str, float]
    rows: float

    def means(self) -> dict[str, float]:
        """Each value's mean per row."""
        return {name: total / self.rows for name, total in self.sums.items()}


def run_pass(
    loader: Any,
    step: Step,
    *,
    key: int,
    seed: int,
    ctx: DistContext,
    channels_last: bool,
    desc: str,
    show: bool,
    postfix: Postfix | None = None,
) -> PassTotals:
    """Run ``step`` on every batch of ``loader`` in the data order of ``key``.

    The loader is a ``tskd_fast.data.train_loader`` (a sampler with ``set_epoch`` and a
    ``generator``). Images (B, C, H, W) and labels (B,) reach the step on ``ctx.device`` (images
    channels_last when asked). The step's sums are added up over the pass and then over processes
    in one all-reduce.
    """
    loader.sampler.set_epoch(key)
    loader.generator.manual_seed(pass_seed(seed, key, ctx.rank))
    device = ctx.device
    sums: dict[str, Any] = {}
    rows = 0
    total = len(loader)
    bar = tqdm(total=total, desc=desc, disable=not show, leave=False, dynamic_ncols=True, mininterval=0.5)
    for index, (images, target) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        values = step(images, target, index)
        rows += target.numel()
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        if postfix is not None and show and (index % 20 == 0 or index == total - 1):
            bar.set_postfix(postfix(values, target.numel()))
        bar.update(1)
    bar.close()
    names = list(sums)
    packed = torch.stack([sums[k] for k in names] + [torch.tensor(float(rows), device=device)])
    ctx.all_reduce_sum(packed)
    return PassTotals({k: packed[i].item() for i, k in enumerate(names)}, packed[-1].item())


__all__ = ["PassTotals", "Postfix", "Step", "pass_seed", "phase_key", "run_pass"]
