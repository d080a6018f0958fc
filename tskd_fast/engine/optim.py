"""SGD and the per-iteration lr schedule: linear warmup, then multistep / cosine / constant."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(groups: list[dict[str, Any]], solver: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD over the distiller's parameter groups; a group's ``lr_scale`` multiplies solver.lr."""
    built = []
    for group in groups:
        group = dict(group)
        scale = group.pop("lr_scale", 1.0)
        group.setdefault("lr", solver["lr"] * scale)
        group.setdefault("weight_decay", solver["weight_decay"])
        built.append(group)
    return torch.optim.SGD(built, lr=solver["lr"], momentum=solver["momentum"], nesterov=solver["nesterov"])


def lr_factor(iteration: int, iters_per_epoch: int, solver: Mapping[str, Any]) -> float:
    """Multiplier of the base lr at a (0-based) global iteration.

    Warmup rises linearly to 1 over ``warmup_epochs`` (reaching 1 at its end); afterwards
    multistep multiplies by ``lr_decay`` once per milestone passed (epochs, like MultiStepLR),
    cosine decays to 0 over the run, constant stays at 1.
    """
    warmup_iters = round(solver["warmup_epochs"] * iters_per_epoch)
    if iteration < warmup_iters:
        return (iteration + 1) / warmup_iters
    epoch = iteration // iters_per_epoch
    if solver["schedule"] == "multistep":
        return solver["lr_decay"] ** bisect.bisect_right(solver["milestones"], epoch)
    if solver["schedule"] == "cosine":
        total = max(1, solver["epochs"] * iters_per_epoch - warmup_iters)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration - warmup_iters) / total)))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, solver: Mapping[str, Any], iters_per_epoch: int
) -> LambdaLR:
    """A scheduler to step once per iteration (its state_dict is the iteration count)."""
    solver = dict(solver)
    return LambdaLR(optimizer, lambda it: lr_factor(it, iters_per_epoch, solver))
