"""Torch-like functions over the fused ops, with a `backend=` switch.

backend: "auto" (default; the TSKD_FAST_BACKEND environment variable can change it) picks the
C++ kernels for CPU tensors and, on CUDA, the CUDA C++ kernels when built, else Triton; "cpu",
"cuda", "triton" and "reference" force one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tskd_fast import reference
from tskd_fast.ops import call, resolve_backend
from tskd_fast.ops.abf import ABF_FUSE
from tskd_fast.ops.checks import check_tensor, shape_str
from tskd_fast.ops.common import opmath_dtype, values_readable
from tskd_fast.ops.convlstm import CONVLSTM_GATES
from tskd_fast.ops.dtd import DTD_MODES, DTD_TEMPERATURE, DTD_WEIGHT
from tskd_fast.ops.hcl import HCL_LOSS
from tskd_fast.ops.kd_loss import KA_MODES, KD_LOSS
from tskd_fast.ops.spec import OpSpec

__all__ = ["abf_fuse", "convlstm_gates", "dtd_temperature", "dtd_weight", "hcl_loss", "kd_loss"]

REDUCTIONS = {"none": 0, "sum": 1, "batchmean": 2}
SCALES = {"tau2": True, "none": False}

# Argument checks: the functions below turn their arguments into the op's (codes for strings,
# tensors for numbers) and check only what that conversion needs; the op checks the rest (the
# spec's check, tskd_fast/ops/<family>.py, and its C++ twin), naming the argument. The C++ ops
# check inside the op; the reference path runs the spec's check here.


def _code(name: str, value, choices: dict):
    code = choices.get(value) if isinstance(value, str) else None
    if code is None:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return code


def _check_for_reference(spec: OpSpec, *args) -> None:
    """The op's checks on the arguments the reference runs on (values on CPU tensors, eagerly)."""
    spec.check(*args)
    if spec.check_values is not None and values_readable(args[0]):
        spec.check_values(*args)


def _labels(target) -> torch.Tensor | None:
    """target as int64 class indices (integer tensors are converted)."""
    if target is None or (type(target) is torch.Tensor and target.dtype is torch.int64):
        return target
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex():
        raise ValueError("target must be an integer tensor of class indices")
    return target if target.dtype == torch.int64 else target.long()


def _teacher_like(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """The teacher logits detached, in the student's dtype when both are floating."""
    if type(teacher) is torch.Tensor and teacher.dtype is student.dtype and not teacher.requires_grad:
        return teacher
    check_tensor(teacher, "teacher_logits")
    if teacher.requires_grad:
        teacher = teacher.detach()
    if teacher.dtype != student.dtype and teacher.is_floating_point() and student.is_floating_point():
        teacher = teacher.to(student.dtype)
    return teacher


def _temperature_rows(temperature: float | torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """temperature as a detached (B,) tensor of the kernels' compute dtype on the logits' device;
    a float is checked here (> 0), a tensor's values by the op."""
    rows = student.shape[0] if student.dim() > 0 else 0
    dtype = opmath_dtype(student.dtype)
    if isinstance(temperature, torch.Tensor):
        if (  # already what the op takes (dtd_temperature's output): the common case, checked first
            temperature.dtype is dtype
            and temperature.shape == (rows,)
            and not temperature.requires_grad
            and temperature.device == student.device
        ):
            return temperature
        if temperature.dim() > 1 or (temperature.dim() == 1 and temperature.shape[0] not in (rows, 1)):
            raise ValueError(
                f"temperature must be a float, a 0-d tensor or a tensor of shape (batch,) = ({rows},), "
                f"got shape {shape_str(temperature.shape)}"
            )
        if temperature.device != student.device and temperature.numel() != 1:
            raise ValueError(
                f"temperature is on {temperature.device} but student_logits is on {student.device}"
            )
        tau = temperature.detach() if temperature.requires_grad else temperature
        if tau.device != student.device or tau.dtype != dtype:
            tau = tau.to(device=student.device, dtype=dtype)
        if tau.dim() != 1 or tau.shape[0] != rows:
            tau = tau.expand(rows).contiguous()
        return tau
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a float or a tensor, got {type(temperature).__name__}")
    if not (temperature > 0 and temperature != float("inf")):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if torch.compiler.is_compiling():
        return torch.full((rows,), float(temperature), dtype=dtype, device=student.device)
    return _constant_rows(float(temperature), rows, dtype, student.device)


# (B,) tensors of one constant temperature, kept for the next call of the same shape: a fixed T is
# the common case, and making the tensor costs more host time than the rest of a small call.
# Never written (the ops only read their temperature) and never handed to the caller.
_CONSTANTS: dict[tuple, torch.Tensor] = {}
_MAX_CONSTANTS = 16


def _constant_rows(value: float, rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (value, rows, dtype, device, torch.is_inference_mode_enabled())
    tau = _CONSTANTS.get(key)
    if tau is None:
        if len(_CONSTANTS) >= _MAX_CONSTANTS:
            _CONSTANTS.clear()
        tau = _CONSTANTS[key] = torch.full((rows,), value, dtype=dtype, device=device)
    return tau


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
    backend: str = "auto",
) -> torch.Tensor:
    """Temperature-scaled KD loss with knowledge adjustment and an optional hard-label term.

    Per row n: loss_n = s_n * KL(q_n || softmax(z_n / tau_n)) + ce_weight * CE(z_n, y_n), where
    q_n = softmax(v_n / tau_n) after knowledge adjustment, s_n = tau_n^2 (scale="tau2", Hinton's
    convention) or 1 (scale="none"), and 0 log 0 = 0.

    Args:
        student_logits: (B, C) float32, float16, bfloat16 (or float64 on the CPU).
        teacher_logits: (B, C), same device; cast to the student's dtype; receives no gradient.
        target: (B,) integer labels in [0, C) or ignore_index; needed for ka and ce_weight.
        temperature: a float or a (B,) tensor (e.g. from dtd_temperature); > 0; no gradient.
        ka: "none"; "ps" swaps the teacher's values at its argmax and at the label; "lsr" replaces
            the target by lsr_p on the label and (1 - lsr_p) / (C - 1) elsewhere. Only rows whose
            teacher argmax differs from the label change; ignored rows get no KA and no CE.
        reduction: "batchmean" (sum over rows / B, like every KD reference; the CE term is averaged
            over B too), "sum" or "none" ((B,) per-row losses).
        backend: see the module docstring.

    Returns:
        The loss in the student's dtype: a scalar, or (B,) for reduction="none".

    Rows whose student or teacher logits hold NaN or +inf (or are all -inf) get a NaN loss and
    NaN gradient, as log_softmax would give; other rows are unaffected. A -inf logit is a masked
    class: a teacher -inf contributes nothing; a student -inf where the target has mass gives inf.
    """
    try:
        ka_code, scale_tau2, reduction_code = KA_MODES[ka], SCALES[scale], REDUCTIONS[reduction]
    except (KeyError, TypeError):  # say which one, as _code does
        ka_code = _code("ka", ka, KA_MODES)
        scale_tau2 = _code("scale", scale, SCALES)
        reduction_code = _code("reduction", reduction, REDUCTIONS)
    check_tensor(student_logits, "student_logits")
    chosen = resolve_backend(backend, student_logits.device)
    teacher = _teacher_like(teacher_logits, student_logits)
    target = _labels(target)
    tau = _temperature_rows(temperature, student_logits)
    # The mean's 1/B goes into the gradient the kernel writes (tskd_fast/ops/kd_loss.py).
    shape = student_logits.shape
    grad_scale = 1.0 / shape[0] if reduction_code == 2 and shape and shape[0] > 0 else 1.0
    compute_grad = student_logits.requires_grad and torch.is_grad_enabled()
    args = (
        student_logits,
        teacher,
        target,
        tau,
        ka_code,
        float(lsr_p),
        scale_tau2,
        float(ce_weight),
        int(ignore_index),
        compute_grad,
        grad_scale,
        reduction_code,
    )
    if chosen == "reference":
        _check_for_reference(KD_LOSS, *args)
        return reference.kd_loss(
            student_logits, teacher, target, tau, ka, lsr_p, scale, ce_weight, ignore_index, reduction
        )
    loss, _ = call(KD_LOSS, chosen, args)
    return loss if loss.dtype == student_logits.dtype else loss.to(student_logits.dtype)


def dtd_weight(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mode: str = "flsw",
    gamma: float = 2.0,
    target: torch.Tensor | None = None,
    ka: str = "none",
    ignore_index: int = -100,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-row DTD weights w (B,) float32 (float64 for float64 logits), without gradient.

    mode="flsw": w = (1 - cos(z, v))^gamma, cosine of the logit vectors with 1e-4 added to each
    norm; with ka="ps" it sees the probability-shifted teacher. mode="cwsm": w = 1 / (max_k
    softmax(z)_k + 1e-3).
    """
    args = _dtd_args(student_logits, teacher_logits, mode, gamma, target, ka, ignore_index)
    chosen = resolve_backend(backend, args[0].device)
    if chosen == "reference":
        _check_for_reference(DTD_WEIGHT, *args)
        student, teacher, target, _, _, ka_code, _ = args
        return reference.dtd_weight(
            student, teacher, target, mode, gamma, "ps" if ka_code else "none", ignore_index
        )
    return call(DTD_WEIGHT, chosen, args)


def _dtd_args(student_logits, teacher_logits, mode, gamma, target, ka, ignore_index) -> tuple:
    """The arguments of the DTD ops (which have no gradient): the labels only where the weights read
    them (ka="ps" with flsw; label smoothing changes the target distribution, not the logits)."""
    try:
        mode_code, ka_code = DTD_MODES[mode], KA_MODES[ka]
    except (KeyError, TypeError):  # say which one, as _code does
        mode_code = _code("mode", mode, DTD_MODES)
        ka_code = _code("ka", ka, KA_MODES)
    check_tensor(student_logits, "student_logits")
    uses_ka = ka_code == 1 and mode_code == 0  # probability shift with flsw
    return (
        student_logits,
        _teacher_like(teacher_logits, student_logits),
        _labels(target) if uses_ka else None,
        mode_code,
        float(gamma),
        ka_code if uses_ka else 0,
        int(ignore_index),
    )


def dtd_temperature(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    t0: float = 4.0,
    beta: float = 1.0,
    gamma: float = 2.0,
    mode: str = "flsw",
    min_temperature: float = 0.1,
    target: torch.Tensor | None = None,
    ka: str = "none",
    ignore_index: int = -100,
    backend: str = "auto",
) -> torch.Tensor:
    """Dynamic per-sample temperatures tau (B,) of DTD, without gradient.

    tau_n = t0 + beta * (mean_batch(w) - w_n) with w from dtd_weight (so the offsets sum to zero
    over the batch), then clamped below at min_temperature: a row the student finds hard (large
    w) gets a sharper target, and the clamp keeps tau > 0 when beta * w spreads more than t0.
    Rows whose w is not finite (NaN or inf logits) stay out of the mean and get tau = t0: the
    other rows are unaffected and every temperature stays valid (their loss is NaN anyway).
    """
    args = (
        *_dtd_args(student_logits, teacher_logits, mode, gamma, target, ka, ignore_index),
        float(t0),
        float(beta),
        float(min_temperature),
    )
    chosen = resolve_backend(backend, args[0].device)
    if chosen == "reference":
        _check_for_reference(DTD_TEMPERATURE, *args)
        student, teacher, target, _, _, ka_code, _ = args[:7]
        return reference.dtd_temperature(
            student,
            teacher,
            t0,
            beta,
            gamma,
            mode,
            min_temperature,
            target,
            "ps" if ka_code else "none",
            ignore_index,
        )
    return call(DTD_TEMPERATURE, chosen, args)


def convlstm_gates(
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None,
    w_co: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The elementwise part of a ConvLSTM cell after its convolution, fused.

    With a_i, a_f, a_g, a_o the four channel blocks of gates (in that order):
        i = sigmoid(a_i + w_ci * c_prev), f = sigmoid(a_f + w_cf * c_prev), g = tanh(a_g),
        c = f * c_prev + i * g, o = sigmoid(a_o + w_co * c), h = o * tanh(c).
    A missing peephole is zero. Math in float32 (float64 for float64 inputs).

    Args:
        gates: (B, 4*C_h, H, W) pre-activations, float32, float16, bfloat16 or float64; NCHW or
            channels_last.
        c_prev: (B, C_h, H, W) previous cell state, same dtype and device.
        w_ci, w_cf, w_co: optional peepholes of shape (C_h, H, W) or (1, C_h, H, W), same dtype
            and device; shared over the batch, so their gradients are summed over it.
        backend: see the module docstring.

    Returns:
        (h, c): the new hidden and cell states, each (B, C_h, H, W) in the dtype of gates.
        Gradients reach gates, c_prev and every peephole given.
    """
    check_tensor(gates, "gates")
    check_tensor(c_prev, "c_prev")
    for name, w in (("w_ci", w_ci), ("w_cf", w_cf), ("w_co", w_co)):
        if w is not None and not isinstance(w, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or None, got {type(w).__name__}")
    chosen = resolve_backend(backend, gates.device)
    if chosen == "reference":
        _check_for_reference(CONVLSTM_GATES, gates, c_prev, w_ci, w_cf, w_co)
        return reference.convlstm_gates(gates, c_prev, w_ci, w_cf, w_co)
    return call(CONVLSTM_GATES, chosen, (gates, c_prev, w_ci, w_cf, w_co))


def _attention_weights(att_weight, att_bias, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention conv's (2, 2M, 1, 1) or (2, 2M) weight and (2,) bias as the op takes them:
    (2, 2M) and (2,) in x's opmath dtype."""
    for name, t in (("att_weight", att_weight), ("att_bias", att_bias)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor")
    if tuple(att_bias.shape) != (2,):
        raise ValueError(f"att_bias must have shape (2,), got {shape_str(att_bias.shape)}")
    if x.dim() == 4:
        m = x.shape[1]
        if tuple(att_weight.shape) not in ((2, 2 * m, 1, 1), (2, 2 * m)):
            raise ValueError(
                f"att_weight must have shape (2, 2M, 1, 1) or (2, 2M) = (2, {2 * m}) for M = {m} channels, "
                f"got {shape_str(att_weight.shape)}"
            )
    opmath = opmath_dtype(x.dtype)
    weight = att_weight.reshape(2, -1) if att_weight.dim() != 2 else att_weight
    if weight.dtype != opmath:
        weight = weight.to(opmath)
    return weight, att_bias if att_bias.dtype == opmath else att_bias.to(opmath)


def abf_fuse(
    x: torch.Tensor,
    y: torch.Tensor,
    att_weight: torch.Tensor,
    att_bias: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """ReviewKD's attention fusion: x * z0 + y_up * z1, z = sigmoid(conv1x1(cat[x, y_up])).

    Args:
        x: (N, M, h, w) float32, float16, bfloat16 (or float64 on the CPU), NCHW or channels_last.
        y: (N, M, h', w') the residual, same dtype and device, h' <= h and w' <= w; y_up is its
            nearest upsampling to (h, w) (src = floor(dst * h' / h), as F.interpolate), never
            materialised by the fused kernels.
        att_weight: (2, 2M, 1, 1) or (2, 2M) weights of the 1x1 attention conv over [x; y_up].
        att_bias: (2,).
        backend: see the module docstring.

    Returns:
        fused (N, M, h, w) in x's dtype and memory format. Gradients reach x, y, att_weight and
        att_bias; the kernels compute in float32 (float64 for float64 inputs).
    """
    check_tensor(x, "x")
    chosen = resolve_backend(backend, x.device)
    weight, bias = _attention_weights(att_weight, att_bias, x)
    if chosen == "reference":
        _check_for_reference(ABF_FUSE, x, y, weight, bias)
        return reference.abf_fuse(x, y, att_weight, att_bias)
    fused, _ = call(ABF_FUSE, chosen, (x, y, weight, bias))
    return fused


def _feature_pairs(
    student_feats: Sequence[torch.Tensor] | torch.Tensor, teacher_feats: Sequence[torch.Tensor] | torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    single_s, single_t = isinstance(student_feats, torch.Tensor), isinstance(teacher_feats, torch.Tensor)
    if single_s != single_t:
        raise ValueError(
            "student_feats and teacher_feats must both be tensors or both be sequences of tensors"
        )
    if single_s:
        return [student_feats], [teacher_feats]
    students, teachers = list(student_feats), list(teacher_feats)
    if len(students) != len(teachers):
        raise ValueError(
            f"student_feats has {len(students)} levels but teacher_feats has {len(teachers)}: "
            f"one teacher feature per student feature is needed"
        )
    if not students:
        raise ValueError("student_feats is empty: at least one stage pair is needed")
    return students, teachers


def _levels(levels) -> list[int]:
    if isinstance(levels, int) or not all(isinstance(lv, int) and not isinstance(lv, bool) for lv in levels):
        raise ValueError(f"levels must be a sequence of ints, got {levels!r}")
    return list(levels)


def hcl_loss(
    student_feats: Sequence[torch.Tensor] | torch.Tensor,
    teacher_feats: Sequence[torch.Tensor] | torch.Tensor,
    levels: Sequence[int] = (4, 2, 1),
    backend: str = "auto",
) -> torch.Tensor:
    """ReviewKD's hierarchical context loss, summed over stage pairs.

    Per pair (fs, ft), both (N, C, H, W): (MSE(fs, ft) + sum_l w_l MSE(pool_l(fs), pool_l(ft)))
    / (1 + sum_l w_l), l over `levels` in order skipping l >= H, w_l = 0.5, 0.25, ... over the
    included levels, pool_l adaptive average pooling to l x l (overlapping windows when l does not
    divide the size). The pairs' losses are summed with no weighting.

    Args:
        student_feats: a (N, C, H, W) tensor or a sequence of them (one per stage), float32,
            float16, bfloat16 (or float64 on the CPU), one dtype, NCHW or channels_last.
        teacher_feats: the same number of features, each the shape, dtype and device of its
            student feature; they receive no gradient.
        levels: the pooled sizes, each >= 1.
        backend: see the module docstring.

    Returns:
        The loss, a 0-d tensor in the student features' dtype (computed in float32, float64 for
        float64 features).
    """
    students, teachers = _feature_pairs(student_feats, teacher_feats)
    levels = _levels(levels)
    check_tensor(students[0], "student_feats[0]")
    chosen = resolve_backend(backend, students[0].device)
    teachers = [ft.detach() if isinstance(ft, torch.Tensor) and ft.requires_grad else ft for ft in teachers]
    grad_enabled = torch.is_grad_enabled()
    compute_grad = [grad_enabled and isinstance(fs, torch.Tensor) and fs.requires_grad for fs in students]
    if chosen == "reference":
        _check_for_reference(HCL_LOSS, students, teachers, levels, compute_grad, 1.0)
        return reference.hcl_loss(students, teachers, tuple(levels))
    loss, _ = call(HCL_LOSS, chosen, (students, teachers, levels, compute_grad, 1.0))
    return loss if loss.dtype == students[0].dtype else loss.to(students[0].dtype)
