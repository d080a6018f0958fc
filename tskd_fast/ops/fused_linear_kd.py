"""The specs of the fused linear + KD ops: the row op between the matmuls and the chunked driver
around them (docs/methods.md §5; how they run, §5.5).

Row op, a kernel of every backend (contract: csrc/include/tskd_fast/fused_linear_kd_math.h):
    fused_linear_kd_rows(student (R, V) written in place, teacher (R, V) | None,
        topk_ids (R, K) int64 | None, topk_logprobs (R, K) opmath | None, target (R,) | None,
        temperature (R,) opmath, divergence: int, beta: float, ka: int, lsr_p: float,
        scale_tau2: bool, ce_weight: float, ignore_index: int, compute_grad: bool,
        grad_scale: float = 1) -> row_loss (R,) opmath
    and, when compute_grad, grad_scale * d row_loss / d student written over `student`.
    divergence codes: DIVERGENCES; ka codes: kd_loss.KA_MODES. It has no autograd formula on
    purpose: the driver owns the gradient (it reads what the row op wrote over the logits), so
    differentiating through the row op itself fails. The C++ op is tskd_fast::fused_linear_kd_rows
    (CPU; CUDA when csrc/cuda registers a kernel for it); a Triton op is defined from this spec by
    tskd_fast/ops/triton/fused_linear_kd.py once `kernels` lists "triton".

Driver ops, written once in Python for every backend (kernels=("python",), bodies in
tskd_fast.ops.fused_linear_kd_driver):
    fused_linear_kd(the hidden states, lm_heads and teacher of tskd_fast.functional.fused_linear_kd
        in rows, codes for its names, ..., row_backend: str)
    -> (loss, the (N,) temperatures used, dX, dW, db): the gradients of the loss (of the sum of
        the row losses for a mean off the CPU, which the backward divides by the count), or (0,)
        tensors when not asked for or reduction is "none"; dW and db in float32 for
        float16/bfloat16 weights.
    fused_linear_kd_backward(grad_rows (N,), temperature_used (N,), the same arguments,
        need_hidden, need_weight, need_bias) -> (dX, dW, db), the backward of reduction "none".
"""

from __future__ import annotations

import torch
from torch import Tensor

from tskd_fast.ops import fused_linear_kd_driver as driver
from tskd_fast.ops.common import opmath_dtype, values_readable
from tskd_fast.ops.fused_linear_kd_checks import (
    DIVERGENCES,
    REDUCTIONS,
    check_fused_linear_kd,
    check_fused_linear_kd_backward,
    check_fused_linear_kd_rows,
    check_fused_linear_kd_rows_values,
    check_fused_linear_kd_values,
)
from tskd_fast.ops.fused_linear_kd_chunks import accumulator_dtype
from tskd_fast.ops.library import declare, define_python
from tskd_fast.ops.spec import Autograd, OpSpec

__all__ = ["DIVERGENCES", "FUSED_LINEAR_KD", "FUSED_LINEAR_KD_BACKWARD", "FUSED_LINEAR_KD_ROWS", "REDUCTIONS"]


# ---- the row op -----------------------------------------------------------------------------------


def fused_linear_kd_rows_fake(student: Tensor, *args) -> Tensor:
    return student.new_empty((student.shape[0],), dtype=opmath_dtype(student.dtype))


FUSED_LINEAR_KD_ROWS = declare(
    OpSpec(
        name="fused_linear_kd_rows",
        family="fused_linear_kd",
        schema=(
            "(Tensor(a!) student, Tensor? teacher, Tensor? topk_ids, Tensor? topk_logprobs, Tensor? target, "
            "Tensor temperature, int divergence, float beta, int ka, float lsr_p, bool scale_tau2, "
            "float ce_weight, int ignore_index, bool compute_grad, float grad_scale=1.) -> Tensor row_loss"
        ),
        fake=fused_linear_kd_rows_fake,
        check=check_fused_linear_kd_rows,
        check_values=check_fused_linear_kd_rows_values,
        # No autograd formula: the driver op owns the gradient (see the module docstring).
        kernels=("cpp", "triton"),
    )
)


# ---- the driver ops -------------------------------------------------------------------------------

_ARGUMENTS = (
    "Tensor student_hidden, Tensor student_weight, Tensor? student_bias, Tensor? teacher_hidden, "
    "Tensor? teacher_weight, Tensor? teacher_bias, Tensor? topk_ids, Tensor? topk_logprobs, Tensor? target, "
    "Tensor temperature, Tensor? teacher_gram, int divergence, float beta, int ka, float lsr_p, "
    "bool scale_tau2, float ce_weight, int ignore_index, int reduction, int vocab_size, int chunk_size, "
    "int dtd_mode, float dtd_t0, float dtd_beta, float dtd_gamma, float dtd_min_temperature, "
    "bool grad_hidden, bool grad_weight, bool grad_bias, str row_backend"
)
# Positions of the driver op's arguments that its fake kernel and backward read.
_TARGET, _IGNORE, _REDUCTION, _GRADS = 8, 17, 18, slice(26, 29)


def fused_linear_kd_fake(student_hidden: Tensor, student_weight: Tensor, *rest):
    args = (student_hidden, student_weight, *rest)
    reduction, (grad_hidden, grad_weight, grad_bias) = args[_REDUCTION], args[_GRADS]
    rows = student_hidden.shape[0]
    opmath = opmath_dtype(student_hidden.dtype)
    grads = reduction != REDUCTIONS["none"]
    loss = student_hidden.new_empty((rows,) if not grads else (), dtype=opmath)
    tau = student_hidden.new_empty((rows,), dtype=opmath)
    empty = driver.empty
    dh = student_hidden.new_empty(student_hidden.shape) if grads and grad_hidden else empty(student_hidden)
    acc = accumulator_dtype(student_weight.dtype)
    dw = (
        student_weight.new_empty(student_weight.shape, dtype=acc)
        if grads and grad_weight
        else empty(student_weight)
    )
    db = (
        student_weight.new_empty((student_weight.shape[0],), dtype=acc)
        if grads and grad_bias
        else empty(student_weight)
    )
    return loss, tau, dh, dw, db


def fused_linear_kd_backward_fake(
    grad_rows, temperature_used, student_hidden, student_weight, student_bias, *rest
):
    need_hidden, need_weight, need_bias = rest[-3:]
    empty = driver.empty
    dh = student_hidden.new_empty(student_hidden.shape) if need_hidden else empty(student_hidden)
    dw = student_weight.new_empty(student_weight.shape) if need_weight else empty(student_weight)
    db = (
        student_bias.new_empty(student_bias.shape)
        if need_bias and student_bias is not None
        else empty(student_weight)
    )
    return dh, dw, db


def fused_linear_kd_setup_context(ctx, inputs, output) -> None:
    loss, tau, dh, dw, db = output
    ctx.mark_non_differentiable(tau, dh, dw, db)
    ctx.set_materialize_grads(False)
    ctx.num_inputs = len(inputs)
    ctx.reduction = inputs[_REDUCTION]
    ctx.ignore_index = inputs[_IGNORE]
    ctx.rows = inputs[0].shape[0]
    ctx.dtypes = (inputs[0].dtype, inputs[1].dtype, inputs[2].dtype if inputs[2] is not None else None)
    ctx.prescaled = inputs[0].device.type == "cpu"
    if ctx.reduction == REDUCTIONS["none"]:
        ctx.tensor_slots = [i for i, t in enumerate(inputs) if isinstance(t, Tensor)]
        ctx.inputs = [None if isinstance(t, Tensor) else t for t in inputs]
        ctx.save_for_backward(*[inputs[i] for i in ctx.tensor_slots], tau)
    else:
        ctx.save_for_backward(dh, dw, db, inputs[_TARGET])


def _scaled(grad: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """grad * scale in `dtype`, rounded once from the product in scale's dtype (a float16 or
    bfloat16 dX is widened first, so the scale itself is never rounded); on the CPU, eagerly, grad
    itself when scale is 1."""
    if grad.dtype == dtype and values_readable(scale) and scale.item() == 1.0:
        return grad
    out = torch.empty(grad.shape, dtype=dtype, device=grad.device)
    return torch.mul(grad.to(scale.dtype), scale, out=out)


def fused_linear_kd_backward(ctx, grad_loss, grad_tau, grad_dh, grad_dw, grad_db):
    outputs: list[Tensor | None] = [None] * ctx.num_inputs
    if grad_loss is None:
        return tuple(outputs)
    needs = ctx.needs_input_grad
    if ctx.reduction == REDUCTIONS["none"]:
        saved = ctx.saved_tensors
        inputs = list(ctx.inputs)
        for slot, tensor in zip(ctx.tensor_slots, saved[:-1], strict=True):
            inputs[slot] = tensor
        grads = ctx.backward_op(grad_loss, saved[-1], *inputs, needs[0], needs[1], needs[2])
        for i, g in enumerate(grads):
            outputs[i] = g if needs[i] else None
        return tuple(outputs)
    dh, dw, db, target = ctx.saved_tensors
    scale = grad_loss
    if ctx.reduction == REDUCTIONS["mean"] and not ctx.prescaled:
        scale = scale / driver.kept_count(target, ctx.ignore_index, ctx.rows, scale.dtype)
    for i, g in enumerate((dh, dw, db)):
        if needs[i] and g.numel() > 0:
            outputs[i] = _scaled(g, scale, ctx.dtypes[i])
    return tuple(outputs)


FUSED_LINEAR_KD = declare(
    OpSpec(
        name="fused_linear_kd",
        family="fused_linear_kd",
        schema=(
            f"({_ARGUMENTS}) -> (Tensor loss, Tensor temperature_used, Tensor hidden_grad, "
            "Tensor weight_grad, Tensor bias_grad)"
        ),
        fake=fused_linear_kd_fake,
        check=check_fused_linear_kd,
        check_values=check_fused_linear_kd_values,
        autograd=Autograd(
            fused_linear_kd_setup_context, fused_linear_kd_backward, backward_op="fused_linear_kd_backward"
        ),
        kernels=("python",),
    )
)

FUSED_LINEAR_KD_BACKWARD = declare(
    OpSpec(
        name="fused_linear_kd_backward",
        family="fused_linear_kd",
        schema=(
            f"(Tensor grad_rows, Tensor temperature_used, {_ARGUMENTS}, bool need_hidden, bool need_weight, "
            "bool need_bias) -> (Tensor hidden_grad, Tensor weight_grad, Tensor bias_grad)"
        ),
        fake=fused_linear_kd_backward_fake,
        check=check_fused_linear_kd_backward,
        kernels=("python",),
    )
)

define_python(FUSED_LINEAR_KD_BACKWARD, driver.fused_linear_kd_backward)
define_python(FUSED_LINEAR_KD, driver.fused_linear_kd_forward)
