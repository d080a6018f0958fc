"""Torch-like functions over the fused ops, with a `backend=` switch.

backend: "auto" (default; the TSKD_FAST_BACKEND environment variable can change it) picks the
C++ kernels for CPU tensors and, on CUDA, the CUDA C++ kernels when built, else Triton; "cpu",
"cuda", "triton" and "reference" force one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tskd_fast import reference
from tskd_fast.ops import (
    KA_MODES,
    abf_fuse_ops,
    call_abf_fuse,
    call_convlstm_gates,
    call_kd_loss,
    convlstm_gates_ops,
    dtd_weight_op,
    hcl_loss_of_pairs,
    hcl_loss_op,
    kd_loss_op,
    resolve_backend,
)
from tskd_fast.reference.dtd import temperatures_from_weights

__all__ = [
    "abf_fuse",
    "convlstm_gates",
    "dtd_temperature",
    "dtd_weight",
    "fused_linear_kd",
    "hcl_loss",
    "kd_loss",
]

REDUCTIONS = ("batchmean", "sum", "none")
SCALES = ("tau2", "none")
DTD_MODES = {"flsw": 0, "cwsm": 1}


def _choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _check_logits(student: torch.Tensor, teacher: torch.Tensor) -> None:
    for name, t in (("student_logits", student), ("teacher_logits", teacher)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if student.dim() != 2:
        raise ValueError(f"student_logits must be 2-D (batch, classes), got shape {tuple(student.shape)}")
    if teacher.shape != student.shape:
        raise ValueError(
            f"teacher_logits must have the shape of student_logits {tuple(student.shape)}, "
            f"got {tuple(teacher.shape)}"
        )
    if student.shape[0] == 0:
        raise ValueError("student_logits is an empty batch (0 rows)")
    if student.shape[1] == 0:
        raise ValueError("student_logits has 0 classes")
    if teacher.device != student.device:
        raise ValueError(f"teacher_logits is on {teacher.device} but student_logits is on {student.device}")


def _check_target(
    target: torch.Tensor | None, student: torch.Tensor, needed_for: str | None
) -> torch.Tensor | None:
    if target is None:
        if needed_for is not None:
            raise ValueError(f"{needed_for} needs target labels, but target is None")
        return None
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex():
        raise ValueError("target must be an integer tensor of class indices")
    if target.shape != (student.shape[0],):
        raise ValueError(
            f"target must have shape (batch,) = ({student.shape[0]},), got {tuple(target.shape)}"
        )
    if target.device != student.device:
        raise ValueError(f"target is on {target.device} but student_logits is on {student.device}")
    return target.long()


def _check_labels(target: torch.Tensor, classes: int, ignore_index: int) -> None:
    """Labels in [0, classes) or ignore_index. Synchronising checks are skipped on CUDA and when
    compiling; the kernels check there (device asserts)."""
    if torch.compiler.is_compiling() or target.device.type != "cpu":
        return
    low, high = (int(v) for v in torch.aminmax(target))  # one op: the usual all-valid case is cheap
    if 0 <= low and high < classes:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"target[{index}] = {int(target[index])} is out of range: labels must be in [0, {classes}) "
            f"or equal ignore_index ({ignore_index})"
        )


def _temperature_rows(temperature: float | torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """temperature as a detached (B,) tensor of the kernels' compute dtype; checks it is > 0."""
    rows = student.shape[0]
    dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    if isinstance(temperature, torch.Tensor):
        if temperature.dim() > 1 or (temperature.dim() == 1 and temperature.shape[0] != rows):
            raise ValueError(
                f"temperature must be a float, a 0-d tensor or a tensor of shape (batch,) = ({rows},), "
                f"got shape {tuple(temperature.shape)}"
            )
        if temperature.device != student.device and temperature.numel() != 1:
            raise ValueError(
                f"temperature is on {temperature.device} but student_logits is on {student.device}"
            )
        tau = temperature.detach()
        if tau.device != student.device or tau.dtype != dtype:
            tau = tau.to(device=student.device, dtype=dtype)
        tau = tau.expand(rows).contiguous()  # both no-ops for a contiguous (B,) tensor
        if not torch.compiler.is_compiling() and tau.device.type == "cpu":
            # One op; NaN propagates into both ends and fails the test.
            low, high = (float(v) for v in torch.aminmax(tau))
            if not (low > 0 and high < float("inf")):
                raise ValueError(f"temperature must be finite and > 0, got min {low}")
        return tau
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a float or a tensor, got {type(temperature).__name__}")
    if not (temperature > 0 and temperature != float("inf")):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    return torch.full((rows,), float(temperature), dtype=dtype, device=student.device)


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
    _choice("ka", ka, KA_MODES)
    _choice("scale", scale, SCALES)
    _choice("reduction", reduction, REDUCTIONS)
    _check_logits(student_logits, teacher_logits)
    if not 0.0 < lsr_p <= 1.0:
        raise ValueError(f"lsr_p must be in (0, 1] (the label's probability), got {lsr_p}")
    needed_for = "ka=" + repr(ka) if ka != "none" else ("ce_weight != 0" if ce_weight != 0.0 else None)
    target = _check_target(target, student_logits, needed_for)
    if target is not None:
        _check_labels(target, student_logits.shape[1], ignore_index)
    tau = _temperature_rows(temperature, student_logits)
    teacher = teacher_logits.detach()
    if teacher.dtype != student_logits.dtype:
        teacher = teacher.to(student_logits.dtype)

    chosen = resolve_backend(backend, student_logits.device)
    if chosen == "reference":
        return reference.kd_loss(
            student_logits, teacher, target, tau, ka, lsr_p, scale, ce_weight, ignore_index, reduction
        )
    compute_grad = student_logits.requires_grad and torch.is_grad_enabled()
    rows = student_logits.shape[0]
    # The batchmean factor goes into the gradient the kernel writes (see tskd_fast.ops.kd_loss).
    grad_scale = 1.0 / rows if reduction == "batchmean" else 1.0
    row_loss, _ = call_kd_loss(
        kd_loss_op(chosen),
        student_logits,
        teacher,
        target,
        tau,
        KA_MODES[ka],
        float(lsr_p),
        scale == "tau2",
        float(ce_weight),
        int(ignore_index),
        compute_grad,
        grad_scale,
    )
    if reduction == "batchmean":
        loss = row_loss.mean()  # sum / B in one op
    elif reduction == "sum":
        loss = row_loss.sum()
    else:
        loss = row_loss
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
    _choice("mode", mode, DTD_MODES)
    _choice("ka", ka, KA_MODES)
    _check_logits(student_logits, teacher_logits)
    if not (gamma >= 0 and gamma != float("inf")):
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    uses_ka = ka == "ps" and mode == "flsw"
    target = _check_target(target if uses_ka else None, student_logits, "ka='ps'" if uses_ka else None)
    if target is not None:
        _check_labels(target, student_logits.shape[1], ignore_index)
    student = student_logits.detach()
    teacher = teacher_logits.detach().to(student.dtype)
    chosen = resolve_backend(backend, student.device)
    if chosen == "reference":
        return reference.dtd_weight(
            student, teacher, target, mode, gamma, ka if uses_ka else "none", ignore_index
        )
    return dtd_weight_op(chosen)(
        student,
        teacher,
        target,
        DTD_MODES[mode],
        float(gamma),
        KA_MODES[ka] if uses_ka else 0,
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
    if not (t0 > 0 and t0 != float("inf")):
        raise ValueError(f"t0 must be finite and > 0, got {t0}")
    if not (min_temperature > 0):
        raise ValueError(f"min_temperature must be > 0, got {min_temperature}")
    if beta != beta or abs(beta) == float("inf"):
        raise ValueError(f"beta must be finite, got {beta}")
    w = dtd_weight(student_logits, teacher_logits, mode, gamma, target, ka, ignore_index, backend)
    return temperatures_from_weights(w, t0, beta, min_temperature)


_GATE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_convlstm_inputs(
    gates: torch.Tensor, c_prev: torch.Tensor, peepholes: dict[str, torch.Tensor | None]
) -> None:
    for name, t in (("gates", gates), ("c_prev", c_prev)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _GATE_DTYPES:
            raise ValueError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if c_prev.dim() != 4:
        raise ValueError(f"c_prev must be 4-D (B, C_h, H, W), got shape {tuple(c_prev.shape)}")
    batch, hidden, height, width = c_prev.shape
    expected = (batch, 4 * hidden, height, width)
    if gates.dim() != 4 or tuple(gates.shape) != expected:
        raise ValueError(
            f"gates must have shape (B, 4*C_h, H, W) = {expected} for c_prev of shape "
            f"{tuple(c_prev.shape)} (channels in the order i, f, g, o), got {tuple(gates.shape)}"
        )
    if c_prev.dtype != gates.dtype:
        raise ValueError(f"c_prev must have the dtype of gates ({gates.dtype}), got {c_prev.dtype}")
    if c_prev.device != gates.device:
        raise ValueError(f"c_prev is on {c_prev.device} but gates is on {gates.device}")
    for name, w in peepholes.items():
        if w is None:
            continue
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or None, got {type(w).__name__}")
        if tuple(w.shape) not in ((hidden, height, width), (1, hidden, height, width)):
            raise ValueError(
                f"{name} must have shape (C_h, H, W) = {(hidden, height, width)} or "
                f"(1, C_h, H, W) = {(1, hidden, height, width)}, got {tuple(w.shape)}"
            )
        if w.dtype != gates.dtype:
            raise ValueError(f"{name} must have the dtype of gates ({gates.dtype}), got {w.dtype}")
        if w.device != gates.device:
            raise ValueError(f"{name} is on {w.device} but gates is on {gates.device}")


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
    peepholes = {"w_ci": w_ci, "w_cf": w_cf, "w_co": w_co}
    _check_convlstm_inputs(gates, c_prev, peepholes)
    chosen = resolve_backend(backend, gates.device)
    if chosen == "reference":
        return reference.convlstm_gates(gates, c_prev, w_ci, w_cf, w_co)
    op, backward_op = convlstm_gates_ops(chosen)
    return call_convlstm_gates(op, backward_op, gates, c_prev, w_ci, w_cf, w_co)


FEATURE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_feature(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FEATURE_DTYPES:
        raise ValueError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")


def _check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise ValueError(f"{name} is {t.dtype} but {ref_name} is {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def _check_abf_inputs(
    x: torch.Tensor, y: torch.Tensor, att_weight: torch.Tensor, att_bias: torch.Tensor
) -> None:
    _check_feature("x", x)
    _check_feature("y", y)
    _check_same("y", y, "x", x)
    n, m, h, w = x.shape
    if y.shape[0] != n:
        raise ValueError(f"y (the residual) has batch size {y.shape[0]} but x has {n}")
    if y.shape[1] != m:
        raise ValueError(f"y (the residual) has {y.shape[1]} channels but x has {m}")
    if y.shape[2] > h or y.shape[3] > w:
        raise ValueError(
            f"y (the residual) of spatial size {tuple(y.shape[2:])} cannot be fused into x of size "
            f"{(h, w)}: the residual is upsampled, so it must be at most as large as x"
        )
    for name, t in (("att_weight", att_weight), ("att_bias", att_bias)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if tuple(att_weight.shape) not in ((2, 2 * m, 1, 1), (2, 2 * m)):
        raise ValueError(
            f"att_weight must have shape (2, 2M, 1, 1) or (2, 2M) = (2, {2 * m}) for M = {m} channels, "
            f"got {tuple(att_weight.shape)}"
        )
    if tuple(att_bias.shape) != (2,):
        raise ValueError(f"att_bias must have shape (2,), got {tuple(att_bias.shape)}")


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
    _check_abf_inputs(x, y, att_weight, att_bias)
    chosen = resolve_backend(backend, x.device)
    if chosen == "reference":
        return reference.abf_fuse(x, y, att_weight, att_bias)
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    weight = att_weight.reshape(2, -1).to(opmath)
    bias = att_bias.to(opmath)
    forward_op, backward_op = abf_fuse_ops(chosen)
    return call_abf_fuse(forward_op, backward_op, x, y, weight, bias)


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


def _check_hcl_inputs(students: list[torch.Tensor], teachers: list[torch.Tensor], levels) -> tuple[int, ...]:
    for i, (fs, ft) in enumerate(zip(students, teachers, strict=True)):
        s_name, t_name = f"student_feats[{i}]", f"teacher_feats[{i}]"
        _check_feature(s_name, fs)
        _check_feature(t_name, ft)
        _check_same(t_name, ft, s_name, fs)
        _check_same(s_name, fs, "student_feats[0]", students[0])
        if ft.shape[0] != fs.shape[0]:
            raise ValueError(f"{t_name} has batch size {ft.shape[0]} but {s_name} has {fs.shape[0]}")
        if ft.shape[1] != fs.shape[1]:
            raise ValueError(f"{t_name} has {ft.shape[1]} channels but {s_name} has {fs.shape[1]}")
        if ft.shape != fs.shape:
            raise ValueError(
                f"{t_name} has spatial size {tuple(ft.shape[2:])} but {s_name} has {tuple(fs.shape[2:])}: "
                f"HCL compares features of one size"
            )
    if isinstance(levels, int) or not all(isinstance(lv, int) and not isinstance(lv, bool) for lv in levels):
        raise ValueError(f"levels must be a sequence of ints, got {levels!r}")
    levels = tuple(levels)
    if any(lv < 1 for lv in levels):
        raise ValueError(f"levels must all be >= 1 (pooled sizes), got {levels}")
    return levels


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
    levels = _check_hcl_inputs(students, teachers, levels)
    chosen = resolve_backend(backend, students[0].device)
    if chosen == "reference":
        return reference.hcl_loss(students, [ft.detach() for ft in teachers], levels)
    total = hcl_loss_of_pairs(hcl_loss_op(chosen), students, [ft.detach() for ft in teachers], list(levels))
    return total.to(students[0].dtype)


def fused_linear_kd(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float | torch.Tensor | str = 2.0,
    ka: str = "none",
    ce_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    lsr_p: float = 0.9,
    scale: str = "tau2",
    dtd_mode: str = "flsw",
    dtd_t0: float = 4.0,
    dtd_beta: float = 1.0,
    dtd_gamma: float = 2.0,
    dtd_min_temperature: float = 0.1,
) -> torch.Tensor:
    """KD loss of a language model's next-token distributions, fused with both lm_head matmuls:
    the (N, V) logits are never materialised (docs/methods.md §5, docs/fused-linear-kd.md).

    Per row n (a token position): t = teacher_hidden W_t^T + b_t and s = student_hidden W_s^T + b_s
    over the first V = vocab_size columns; p = softmax(t / tau) after knowledge adjustment (the
    target), q = softmax(s / tau); loss_n = S * D(p, q) + ce_weight * CE(s, y) with S = tau^2
    (scale="tau2") or 1, and D:
        forward_kl KL(p||q); reverse_kl KL(q||p); jsd beta KL(p||m) + (1-beta) KL(q||m) with
        m = beta p + (1-beta) q, 0 < beta < 1; skew_forward_kl KL(p || beta p + (1-beta) q);
        skew_reverse_kl KL(q || beta q + (1-beta) p), 0 <= beta < 1; tvd 1/2 sum |p - q|.
    Rows are processed chunk_size at a time; the forward computes the student's gradients, so the
    backward only scales them.

    Args:
        student_hidden: (N, H_s) or (..., H_s), float32, bfloat16, float16 (float64 on the CPU).
        student_weight: (V_s, H_s) the student's lm_head weight, same dtype (under torch.autocast
            both are cast to the autocast dtype, as F.linear would).
        teacher_hidden, teacher_weight: (N, H_t) and (V_t, H_t), or None with teacher_topk; they
            receive no gradient.
        target: (N,) next-token labels, or None. Rows whose label is ignore_index are left out.
        divergence, beta: as above.
        temperature: a float, an (N,) tensor (no gradient), or "dtd": per-token DTD temperatures
            tau_n = max(dtd_t0 + dtd_beta (mean(w) - w_n), dtd_min_temperature), w from dtd_mode
            "flsw" ((1 - cos(s, t))^dtd_gamma) or "cwsm" (1 / (max softmax(s) + 1e-3)), the mean
            over the rows not ignored, computed inside the op.
        ka: "none", "ps" or "lsr" (lsr_p on the label), on rows whose teacher argmax is not the
            label, as in kd_loss; not with teacher_topk.
        ce_weight: weight of a hard-label cross-entropy on s at temperature 1 (needs target).
        reduction: "mean" over the rows not ignored (0 when all are), "sum", or "none" (per row,
            0 on ignored rows; its backward runs the chunks again).
        vocab_size: the real vocabulary when the lm_heads are padded (later rows of the weights
            are left out and get zero gradient); None: the weights must have equal rows.
        chunk_size: rows per chunk; None chooses from N, V and the free memory.
        backend: "auto", "cpu", "cuda", "triton" (the row kernel between the matmuls) or
            "reference" (plain PyTorch on full logits).
        student_bias, teacher_bias: (V_s,) and (V_t,) lm_head biases, optional.
        teacher_topk: (ids (N, K) int, logprobs (N, K)): an offline teacher's top-k
            log-probabilities at temperature 1. Its remaining mass is one tail bucket, compared
            with the student's mass outside the ids (the student normalised over all V); the
            temperature acts on the teacher as if that mass were spread evenly over the V - K
            other ids.

    Returns:
        The loss in float32 (float64 for float64 inputs): a scalar, or (...) per row for
        reduction="none". Gradients reach student_hidden, student_weight and student_bias.
    """
    from tskd_fast.ops.fused_linear_kd_call import call_fused_linear_kd

    loss, _ = call_fused_linear_kd(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        target,
        divergence,
        beta,
        temperature,
        ka,
        ce_weight,
        ignore_index,
        reduction,
        vocab_size,
        chunk_size,
        backend,
        student_bias=student_bias,
        teacher_bias=teacher_bias,
        teacher_topk=teacher_topk,
        lsr_p=lsr_p,
        scale=scale,
        dtd_mode=dtd_mode,
        dtd_t0=dtd_t0,
        dtd_beta=dtd_beta,
        dtd_gamma=dtd_gamma,
        dtd_min_temperature=dtd_min_temperature,
    )
    return loss
