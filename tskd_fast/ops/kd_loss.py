"""The spec of the fused KD-loss op (tskd_fast::kd_loss): schema, fake kernel, checks, autograd.

    kd_loss(student (B, C), teacher (B, C), target (B,) int64 | None, temperature (B,) opmath,
            ka: int, lsr_p: float, scale_tau2: bool, ce_weight: float, ignore_index: int,
            compute_grad: bool, grad_scale: float = 1, reduction: int = 0)
    -> (loss: the per-row losses (B,) (reduction 0), their sum (1) or mean (2) as a 0-d tensor,
              float32 (float64 for float64 logits),
        row_grad (B, C) logits dtype: grad_scale * d row_loss[n] / d student[n], or (0,))

The forward computes each row's gradient, so backward is at most one scaling by the incoming
gradient: no softmax is kept alive and no second pass over the logits happens. The functional
passes grad_scale = 1/B with the mean, so that loss.backward() hands the kernel's gradient on
untouched on the CPU (tskd_fast.ops.common.scale_saved_gradient); on CUDA, and whenever traced,
every backward writes a new (B, C) tensor, row_grad * incoming / grad_scale: telling that the
incoming gradient is exactly grad_scale would need its values on the host, a stream
synchronisation per step, which costs more than the pass and would stall the GPU (and under AMP's
GradScaler the incoming gradient is never grad_scale anyway).
"""

from __future__ import annotations

import math

import torch

from tskd_fast.ops import checks
from tskd_fast.ops.common import opmath_dtype, scale_saved_gradient
from tskd_fast.ops.library import declare
from tskd_fast.ops.spec import Autograd, OpSpec

KA_MODES = {"none": 0, "ps": 1, "lsr": 2}
REDUCE_NONE, REDUCE_SUM, REDUCE_MEAN = 0, 1, 2


def kd_loss_fake(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    compute_grad: bool,
    grad_scale: float = 1.0,
    reduction: int = REDUCE_NONE,
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (student.shape[0],) if reduction == REDUCE_NONE else ()
    loss = student.new_empty(shape, dtype=opmath_dtype(student.dtype))
    row_grad = student.new_empty(student.shape) if compute_grad else student.new_empty((0,))
    return loss, row_grad


def check_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    ka: int,
    lsr_p: float,
    scale_tau2: bool,
    ce_weight: float,
    ignore_index: int,
    compute_grad: bool,
    grad_scale: float = 1.0,
    reduction: int = REDUCE_NONE,
) -> None:
    """The argument check (csrc/checks/kd_loss.cpp says the same)."""
    checks.check_logit_pair(student, teacher)
    checks.check_target(target, student)
    checks.check_ka(ka, target)
    if target is None and ce_weight != 0.0:
        checks.fail("ce_weight != 0 needs target labels, but target is None")
    if not 0.0 < lsr_p <= 1.0:
        checks.fail(f"lsr_p must be in (0, 1], got {checks.num(lsr_p)}")
    if not math.isfinite(ce_weight):
        checks.fail(f"ce_weight must be finite, got {checks.num(ce_weight)}")
    if not math.isfinite(grad_scale):
        checks.fail(f"grad_scale must be finite, got {checks.num(grad_scale)}")
    if not REDUCE_NONE <= reduction <= REDUCE_MEAN:
        checks.fail(f"reduction must be 0 (none), 1 (sum) or 2 (mean), got {reduction}")
    checks.check_tensor(temperature, "temperature")
    rows = student.shape[0]
    if temperature.dim() != 1 or temperature.shape[0] != rows:
        checks.fail(
            f"temperature must have shape (batch,) = ({rows},), got {checks.shape_str(temperature.shape)}"
        )
    opmath = opmath_dtype(student.dtype)
    if temperature.dtype != opmath:
        checks.fail(f"temperature must be {opmath} for {student.dtype} logits, got {temperature.dtype}")
    if temperature.device != student.device:
        checks.fail(f"temperature is on {temperature.device} but student_logits is on {student.device}")


def check_kd_loss_values(
    student, teacher, target, temperature, ka, lsr_p, scale_tau2, ce_weight, ignore_index, *rest
):
    """Labels in range and temperatures finite and > 0 (CPU tensors; reads them)."""
    if target is not None:
        checks.check_labels(target, student.shape[1], ignore_index)
    low, high = (float(v) for v in torch.aminmax(temperature))  # NaN fails both ends
    if low > 0 and high < math.inf:
        return
    ok = (temperature > 0) & torch.isfinite(temperature)
    index = int((~ok).nonzero()[0, 0])
    checks.fail(
        f"temperature must be finite and > 0, got temperature[{index}] = {checks.num(float(temperature[index]))}"
    )


def kd_loss_setup_context(ctx, inputs, output) -> None:
    _, row_grad = output
    ctx.mark_non_differentiable(row_grad)
    # An unused loss gradient stays None instead of a zero tensor.
    ctx.set_materialize_grads(False)
    student, compute_grad = inputs[0], inputs[9]
    ctx.compute_grad = compute_grad
    ctx.grad_scale = inputs[10] if len(inputs) > 10 else 1.0
    reduction = inputs[11] if len(inputs) > 11 else REDUCE_NONE
    # The factor of the reduction: d mean / d row_loss[n] = 1 / B.
    ctx.weight = 1.0 / student.shape[0] if reduction == REDUCE_MEAN else 1.0
    ctx.save_for_backward(row_grad)


def kd_loss_backward(ctx, grad_loss: torch.Tensor | None, grad_row_grad: torch.Tensor | None):
    rest = (None,) * 11
    if grad_loss is None:  # the loss itself was not used
        return (None, *rest)
    if not ctx.compute_grad:
        raise RuntimeError(
            "tskd_fast::kd_loss was called with compute_grad=False, so it kept no gradient; "
            "call it with compute_grad=True to backpropagate"
        )
    (row_grad,) = ctx.saved_tensors
    return (scale_saved_gradient(row_grad, grad_loss, ctx.weight, ctx.grad_scale), *rest)


KD_LOSS = declare(
    OpSpec(
        name="kd_loss",
        family="kd_loss",
        schema=(
            "(Tensor student, Tensor teacher, Tensor? target, Tensor temperature, int ka, float lsr_p, "
            "bool scale_tau2, float ce_weight, int ignore_index, bool compute_grad, float grad_scale=1., "
            "int reduction=0) -> (Tensor loss, Tensor row_grad)"
        ),
        fake=kd_loss_fake,
        check=check_kd_loss,
        check_values=check_kd_loss_values,
        autograd=Autograd(kd_loss_setup_context, kd_loss_backward),
    )
)
