"""The specs of the DTD ops (dynamic temperature distillation): per-row weights and the
temperatures made from them. Neither has a gradient.

    dtd_weight(student (B, C), teacher (B, C), target (B,) int64 | None, mode: int (0 flsw,
               1 cwsm), gamma: float, ka: int, ignore_index: int) -> w (B,) opmath
    dtd_temperature(the same, t0: float, beta: float, min_temperature: float) -> tau (B,) opmath
        tau_n = max(t0 + beta (mean(w) - w_n), min_temperature), the mean over the finite weights;
        a row whose weight is not finite gets t0 (tskd_fast.reference.dtd.temperatures_from_weights)

opmath is float32 (float64 for float64 logits).
"""

from __future__ import annotations

import math

import torch

from tskd_fast.ops import checks
from tskd_fast.ops.common import opmath_dtype
from tskd_fast.ops.library import declare
from tskd_fast.ops.spec import OpSpec

DTD_MODES = {"flsw": 0, "cwsm": 1}


def dtd_weight_fake(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    ignore_index: int,
    *temperature_args: float,
) -> torch.Tensor:
    return student.new_empty((student.shape[0],), dtype=opmath_dtype(student.dtype))


def check_dtd_weight(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    ignore_index: int,
) -> None:
    """The argument check (csrc/checks/dtd.cpp says the same)."""
    checks.check_logit_pair(student, teacher)
    checks.check_target(target, student)
    if mode not in (0, 1):
        checks.fail(f"mode must be 0 (flsw) or 1 (cwsm), got {mode}")
    checks.check_ka(ka, target)
    if not (math.isfinite(gamma) and gamma >= 0.0):
        checks.fail(f"gamma must be finite and >= 0, got {checks.num(gamma)}")


def check_dtd_temperature(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    ignore_index: int,
    t0: float,
    beta: float,
    min_temperature: float,
) -> None:
    check_dtd_weight(student, teacher, target, mode, gamma, ka, ignore_index)
    if not (math.isfinite(t0) and t0 > 0):
        checks.fail(f"t0 must be finite and > 0, got {checks.num(t0)}")
    if not math.isfinite(beta):
        checks.fail(f"beta must be finite, got {checks.num(beta)}")
    if not min_temperature > 0:
        checks.fail(f"min_temperature must be > 0, got {checks.num(min_temperature)}")


def check_dtd_values(student, teacher, target, mode, gamma, ka, ignore_index, *temperature_args) -> None:
    """Labels in range where the weights read them (ka != 0; CPU tensors)."""
    if target is not None and ka != 0:
        checks.check_labels(target, student.shape[1], ignore_index)


_INPUTS = "Tensor student, Tensor teacher, Tensor? target, int mode, float gamma, int ka, int ignore_index"

DTD_WEIGHT = declare(
    OpSpec(
        name="dtd_weight",
        family="dtd",
        schema=f"({_INPUTS}) -> Tensor",
        fake=dtd_weight_fake,
        check=check_dtd_weight,
        check_values=check_dtd_values,
        differentiable=False,
    )
)

DTD_TEMPERATURE = declare(
    OpSpec(
        name="dtd_temperature",
        family="dtd",
        schema=f"({_INPUTS}, float t0, float beta, float min_temperature) -> Tensor",
        fake=dtd_weight_fake,
        check=check_dtd_temperature,
        check_values=check_dtd_values,
        differentiable=False,
    )
)
