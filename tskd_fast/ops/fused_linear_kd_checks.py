"""The arguments of the fused linear + KD ops, each check raising ValueError that names the argument.

- `convert` turns tskd_fast.functional.fused_linear_kd's arguments into the driver op's: names into
  codes, leading dimensions into rows, a float temperature into one per row, the top-k pair into
  ids and log-probabilities, vocab_size=None into the lm_heads' rows. It checks only what that
  needs; the op's check does the rest.
- `check_fused_linear_kd` is the driver op's spec check (tskd_fast.ops.fused_linear_kd), and
  `check_fused_linear_kd_rows` the row op's, whose twin csrc/checks/fused_linear_kd.cpp says the
  same words. Neither reads a tensor's values.
- The `_values` checks read them (labels and ids in range, ids distinct, log-probabilities,
  temperatures > 0), on CPU tensors only: on CUDA a read would synchronise the stream, and a
  traced tensor has no values. The kernels check labels and ids there instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tskd_fast.ops import checks
from tskd_fast.ops.checks import fail, num, shape_str
from tskd_fast.ops.common import opmath_dtype, values_readable
from tskd_fast.ops.dtd import DTD_MODES
from tskd_fast.ops.kd_loss import KA_MODES

DIVERGENCES = {
    "forward_kl": 0,
    "reverse_kl": 1,
    "jsd": 2,
    "skew_forward_kl": 3,
    "skew_reverse_kl": 4,
    "tvd": 5,
}
JSD, SKEW_FORWARD_KL, SKEW_REVERSE_KL = 2, 3, 4
REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}
SCALES = {"tau2": True, "none": False}
ROW_BACKENDS = ("cpu", "cuda", "triton")
NO_DTD = -1  # the driver op's dtd_mode when the temperatures are given
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_KA_NAMES = {code: name for name, code in KA_MODES.items()}
_DTD_NAMES = {code: name for name, code in DTD_MODES.items()}


# ---- user arguments -> the driver op's ------------------------------------------------------------


@dataclass
class Checked:
    """fused_linear_kd's arguments as the driver op takes them."""

    student_hidden: torch.Tensor  # (N, H_s)
    student_weight: torch.Tensor
    student_bias: torch.Tensor | None
    teacher_hidden: torch.Tensor | None  # (N, H_t)
    teacher_weight: torch.Tensor | None
    teacher_bias: torch.Tensor | None
    topk_ids: torch.Tensor | None  # (N, K) int64
    topk_logprobs: torch.Tensor | None  # (N, K) opmath
    target: torch.Tensor | None  # (N,) int64
    temperature: torch.Tensor | None  # (N,) opmath; None for "dtd"
    divergence: int
    ka: int
    reduction: int
    scale_tau2: bool
    dtd_mode: int  # NO_DTD unless temperature="dtd"
    lead_shape: tuple[int, ...]  # the leading shape of the hidden states (reduction "none")
    vocab: int
    chunk_size: int  # 0: chosen by the op


def _code(name: str, value, choices: dict):
    code = choices.get(value) if isinstance(value, str) else None
    if code is None:
        fail(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return code


def _tensor(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _integer_tensor(name: str, t, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex():
        fail(f"{name} must be an integer tensor of {what}")
    return t


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        fail(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive_int_or_none(name: str, value) -> int:
    """0 for None, else value, a positive int."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(f"{name} must be a positive int or None, got {value!r}")
    return value


def _rows(side: str, hidden, lead: tuple[int, ...] | None) -> torch.Tensor:
    """`side`_hidden as (N, H): its leading dimensions flattened, matching the student's."""
    hidden = _tensor(f"{side}_hidden", hidden)
    if hidden.dim() < 2:
        fail(f"{side}_hidden must be (N, H) or (..., H), got shape {shape_str(hidden.shape)}")
    if lead is not None and tuple(hidden.shape[:-1]) != lead:
        fail(
            f"{side}_hidden has rows of shape {shape_str(hidden.shape[:-1])} but student_hidden has "
            f"{shape_str(lead)}: one teacher row per student row"
        )
    return hidden.reshape(-1, hidden.shape[-1])


def _vocab(vocab_size, student_weight, teacher_weight) -> int:
    """vocab_size, or the rows both lm_heads share when it is None."""
    if vocab_size is not None:
        return _positive_int_or_none("vocab_size", vocab_size)
    rows = _tensor("student_weight", student_weight).shape[0]
    if teacher_weight is not None:
        teacher_rows = _tensor("teacher_weight", teacher_weight).shape[0]
        if teacher_rows != rows:
            fail(
                f"vocab_size is None but student_weight has {rows} rows and teacher_weight "
                f"{teacher_rows}: give vocab_size, the real vocabulary both lm_heads share"
            )
    return rows


def _labels(target, lead: tuple[int, ...], rows: int) -> torch.Tensor:
    target = _integer_tensor("target", target, "token ids")
    if tuple(target.shape) != lead and tuple(target.shape) != (rows,):
        fail(
            f"target must have shape {shape_str(lead)} (one label per row of student_hidden), "
            f"got {shape_str(target.shape)}"
        )
    return target.reshape(rows).long()


def _topk(teacher_topk, lead: tuple[int, ...], rows: int, opmath) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(teacher_topk, tuple | list) or len(teacher_topk) != 2:
        fail("teacher_topk must be a pair (ids, logprobs)")
    ids, logprobs = teacher_topk
    ids = _integer_tensor("teacher_topk ids", ids, "shape (N, K)")
    logprobs = _tensor("teacher_topk logprobs", logprobs)
    if not logprobs.is_floating_point():
        fail(f"teacher_topk logprobs must be a floating-point tensor, got {logprobs.dtype}")
    if ids.dim() < 1 or tuple(ids.shape[:-1]) != lead:
        fail(f"teacher_topk ids must have shape {(*lead, 'K')}, got {shape_str(ids.shape)}")
    if logprobs.shape != ids.shape:
        fail(
            f"teacher_topk logprobs must have the shape of the ids {shape_str(ids.shape)}, "
            f"got {shape_str(logprobs.shape)}"
        )
    k = ids.shape[-1]
    return ids.reshape(rows, k).long(), logprobs.reshape(rows, k).to(opmath)


def _temperature(temperature, lead: tuple[int, ...], rows: int, opmath, ref) -> torch.Tensor | None:
    """(N,) opmath temperatures, or None for "dtd"."""
    if isinstance(temperature, str):
        if temperature != "dtd":
            fail(f"temperature must be a float, a tensor or 'dtd', got {temperature!r}")
        return None
    if isinstance(temperature, torch.Tensor):
        if temperature.dim() > 0 and tuple(temperature.shape) not in (lead, (rows,)):
            fail(
                f"temperature must be a float, a 0-d tensor or a tensor of shape {shape_str(lead)} "
                f"(one per row), got shape {shape_str(temperature.shape)}"
            )
        if temperature.numel() != 1 and temperature.device != ref.device:
            fail(f"temperature is on {temperature.device} but student_hidden is on {ref.device}")
        return temperature.detach().to(device=ref.device, dtype=opmath).reshape(-1).expand(rows).contiguous()
    value = _finite("temperature", temperature)
    if not value > 0:
        fail(f"temperature must be > 0, got {num(value)}")
    return torch.full((rows,), value, dtype=opmath, device=ref.device)


def convert(
    student_hidden,
    student_weight,
    teacher_hidden,
    teacher_weight,
    target,
    divergence,
    temperature,
    ka,
    reduction,
    vocab_size,
    chunk_size,
    student_bias,
    teacher_bias,
    teacher_topk,
    scale,
    dtd_mode,
) -> Checked:
    """fused_linear_kd's arguments in the driver op's form; the numbers (beta, lsr_p, ce_weight,
    ignore_index and DTD's) pass as they are, for the op's check."""
    codes = (
        _code("divergence", divergence, DIVERGENCES),
        _code("ka", ka, KA_MODES),
        _code("reduction", reduction, REDUCTIONS),
        _code("scale", scale, SCALES),
    )
    hidden = _rows("student", student_hidden, None)
    lead = tuple(student_hidden.shape[:-1])
    # The op's schema takes tensors: anything else is named here, before the dispatcher sees it.
    for name, t in (
        ("student_weight", student_weight),
        ("student_bias", student_bias),
        ("teacher_weight", teacher_weight),
        ("teacher_bias", teacher_bias),
    ):
        if t is not None:
            _tensor(name, t)
    rows = hidden.shape[0]
    opmath = opmath_dtype(hidden.dtype)
    has_teacher = teacher_hidden is not None or teacher_weight is not None
    if has_teacher and teacher_topk is not None:
        fail("give either teacher_hidden and teacher_weight or teacher_topk, not both")
    if not has_teacher and teacher_topk is None:
        fail("a teacher is needed: teacher_hidden and teacher_weight, or teacher_topk=(ids, logprobs)")
    if has_teacher and (teacher_hidden is None or teacher_weight is None):
        missing = "teacher_hidden" if teacher_hidden is None else "teacher_weight"
        fail(f"{missing} is None: teacher_hidden and teacher_weight go together")
    if not has_teacher and teacher_bias is not None:
        fail("teacher_bias is given without teacher_weight")
    ids = logprobs = None
    if teacher_topk is not None:
        ids, logprobs = _topk(teacher_topk, lead, rows, opmath)
    tau = _temperature(temperature, lead, rows, opmath, hidden)
    return Checked(
        hidden,
        student_weight,
        student_bias,
        _rows("teacher", teacher_hidden, lead) if has_teacher else None,
        teacher_weight,
        teacher_bias,
        ids,
        logprobs,
        _labels(target, lead, rows) if target is not None else None,
        tau,
        *codes[:3],
        codes[3],
        _code("dtd_mode", dtd_mode, DTD_MODES) if tau is None else NO_DTD,
        lead,
        _vocab(vocab_size, student_weight, teacher_weight if has_teacher else None),
        _positive_int_or_none("chunk_size", chunk_size),
    )


# ---- the driver op's check ------------------------------------------------------------------------


def _in(name: str, value: float, low: float, high: float, low_open: bool, high_open: bool) -> None:
    bad_low = value <= low if low_open else value < low
    bad_high = value >= high if high_open else value > high
    if not math.isfinite(value) or bad_low or bad_high:
        fail(
            f"{name} must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}, "
            f"got {value}"
        )


def _lm_head(side: str, hidden, weight, bias, ref: torch.Tensor | None) -> None:
    """`side`_hidden (rows, H), `side`_weight (V, H) and `side`_bias (V,) or None: one floating
    dtype (float64 on the CPU only), on student_hidden's device."""
    hidden = _tensor(f"{side}_hidden", hidden)
    weight = _tensor(f"{side}_weight", weight)
    if hidden.dtype not in FLOAT_DTYPES:
        fail(f"{side}_hidden must be float32, float16, bfloat16 or float64, got {hidden.dtype}")
    if hidden.dim() != 2:
        fail(f"{side}_hidden must be (N, H), got shape {shape_str(hidden.shape)}")
    if hidden.shape[0] == 0:
        fail(f"{side}_hidden has no rows (shape {shape_str(hidden.shape)})")
    if ref is not None and hidden.shape[0] != ref.shape[0]:
        fail(
            f"{side}_hidden has rows of shape {shape_str(hidden.shape[:1])} but student_hidden has "
            f"{shape_str(ref.shape[:1])}: one teacher row per student row"
        )
    width = hidden.shape[1]
    if weight.dim() != 2 or weight.shape[1] != width:
        fail(
            f"{side}_weight must have shape (V, H) with H = {width} (the width of {side}_hidden), "
            f"got {shape_str(weight.shape)}"
        )
    if weight.dtype != hidden.dtype:
        fail(
            f"{side}_weight is {weight.dtype} but {side}_hidden is {hidden.dtype}: give both in one dtype "
            f"(or run under torch.autocast)"
        )
    if bias is not None:
        bias = _tensor(f"{side}_bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            fail(f"{side}_bias must have shape (V,) = ({weight.shape[0]},), got {shape_str(bias.shape)}")
        if bias.dtype != weight.dtype:
            fail(f"{side}_bias is {bias.dtype} but {side}_weight is {weight.dtype}")
    device = (ref if ref is not None else hidden).device
    for name, t in ((f"{side}_hidden", hidden), (f"{side}_weight", weight), (f"{side}_bias", bias)):
        if t is not None and t.device != device:
            fail(f"{name} is on {t.device} but student_hidden is on {device}")
        if t is not None and t.dtype == torch.float64 and t.device.type != "cpu":
            fail(f"{name}: float64 is supported on the CPU only")


def _on_device(name: str, t: torch.Tensor, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        fail(f"{name} is on {t.device} but student_hidden is on {ref.device}")


def _check_topk(ids, logprobs, rows: int, vocab: int, ref: torch.Tensor) -> None:
    ids = _tensor("teacher_topk ids", ids)
    logprobs = _tensor("teacher_topk logprobs", logprobs)
    if ids.dim() != 2 or ids.shape[0] != rows:
        fail(f"teacher_topk ids must have shape (N, K) with N = {rows}, got {shape_str(ids.shape)}")
    if ids.dtype != torch.int64:
        fail(f"teacher_topk ids must be torch.int64, got {ids.dtype}")
    if logprobs.shape != ids.shape:
        fail(
            f"teacher_topk logprobs must have the shape of the ids {shape_str(ids.shape)}, "
            f"got {shape_str(logprobs.shape)}"
        )
    opmath = opmath_dtype(ref.dtype)
    if logprobs.dtype != opmath:
        fail(f"teacher_topk logprobs must be {opmath} for {ref.dtype} hidden states, got {logprobs.dtype}")
    k = ids.shape[1]
    if k < 1:
        fail("teacher_topk lists no ids (K = 0)")
    if k > vocab:
        fail(f"teacher_topk lists K = {k} ids per row, more than the vocabulary V = {vocab}")
    _on_device("teacher_topk ids", ids, ref)
    _on_device("teacher_topk logprobs", logprobs, ref)


def check_fused_linear_kd(
    student_hidden,
    student_weight,
    student_bias,
    teacher_hidden,
    teacher_weight,
    teacher_bias,
    topk_ids,
    topk_logprobs,
    target,
    temperature,
    teacher_gram,
    divergence,
    beta,
    ka,
    lsr_p,
    scale_tau2,
    ce_weight,
    ignore_index,
    reduction,
    vocab_size,
    chunk_size,
    dtd_mode,
    dtd_t0,
    dtd_beta,
    dtd_gamma,
    dtd_min_temperature,
    grad_hidden,
    grad_weight,
    grad_bias,
    row_backend,
) -> None:
    """The driver op's arguments (the spec's schema), without reading values; the names are those
    of tskd_fast.functional.fused_linear_kd."""
    _lm_head("student", student_hidden, student_weight, student_bias, None)
    rows = student_hidden.shape[0]
    has_teacher = teacher_hidden is not None or teacher_weight is not None
    if has_teacher and topk_ids is not None:
        fail("give either teacher_hidden and teacher_weight or teacher_topk, not both")
    if not has_teacher and topk_ids is None:
        fail("a teacher is needed: teacher_hidden and teacher_weight, or teacher_topk=(ids, logprobs)")
    if has_teacher:
        if teacher_hidden is None or teacher_weight is None:
            missing = "teacher_hidden" if teacher_hidden is None else "teacher_weight"
            fail(f"{missing} is None: teacher_hidden and teacher_weight go together")
        _lm_head("teacher", teacher_hidden, teacher_weight, teacher_bias, student_hidden)
    elif teacher_bias is not None:
        fail("teacher_bias is given without teacher_weight")
    if vocab_size < 1:
        fail(f"vocab_size must be a positive int or None, got {vocab_size}")
    for name, weight in (("student_weight", student_weight), ("teacher_weight", teacher_weight)):
        if weight is not None and vocab_size > weight.shape[0]:
            fail(f"vocab_size = {vocab_size} exceeds the {weight.shape[0]} rows of {name}")
    if not 0 <= divergence <= 5:
        fail(f"divergence must be 0 (forward_kl) to 5 (tvd), got {divergence}")
    if not 0 <= ka <= 2:
        fail(f"ka must be 0 (none), 1 (ps) or 2 (lsr), got {ka}")
    if topk_ids is not None:
        _check_topk(topk_ids, topk_logprobs, rows, vocab_size, student_hidden)
        if ka != 0:
            fail(
                f"ka={_KA_NAMES[ka]!r} is not defined with teacher_topk: knowledge adjustment needs the "
                f"teacher's full distribution (its argmax and every probability); use ka='none'"
            )
    if target is not None:
        target = _tensor("target", target)
        if tuple(target.shape) != (rows,):
            fail(
                f"target must have shape ({rows},) (one label per row of student_hidden), got {shape_str(target.shape)}"
            )
        if target.dtype != torch.int64:
            fail(f"target must be torch.int64, got {target.dtype}")
        _on_device("target", target, student_hidden)
    elif ka != 0:
        fail(f"ka={_KA_NAMES[ka]!r} needs target labels, but target is None")
    elif ce_weight != 0.0:
        fail("ce_weight != 0 needs target labels, but target is None")
    if divergence == JSD:
        _in("beta", beta, 0.0, 1.0, True, True)
    elif divergence in (SKEW_FORWARD_KL, SKEW_REVERSE_KL):
        _in("beta", beta, 0.0, 1.0, False, True)
    _in("lsr_p", lsr_p, 0.0, 1.0, True, False)
    if not math.isfinite(ce_weight):
        fail(f"ce_weight must be a finite number, got {ce_weight!r}")
    if not 0 <= reduction <= 2:
        fail(f"reduction must be 0 (mean), 1 (sum) or 2 (none), got {reduction}")
    if chunk_size < 0:
        fail(f"chunk_size must be a positive int or None, got {chunk_size}")
    if row_backend not in ROW_BACKENDS:
        fail(f"row_backend must be one of {ROW_BACKENDS}, got {row_backend!r}")
    opmath = opmath_dtype(student_hidden.dtype)
    if dtd_mode == NO_DTD:
        temperature = _tensor("temperature", temperature)
        if tuple(temperature.shape) != (rows,):
            fail(f"temperature must have shape ({rows},), got {shape_str(temperature.shape)}")
        if temperature.dtype != opmath:
            fail(
                f"temperature must be {opmath} for {student_hidden.dtype} hidden states, got {temperature.dtype}"
            )
        _on_device("temperature", temperature, student_hidden)
        return
    if dtd_mode not in _DTD_NAMES:
        fail(f"dtd_mode must be -1 (no DTD), 0 (flsw) or 1 (cwsm), got {dtd_mode}")
    if _DTD_NAMES[dtd_mode] == "flsw" and topk_ids is not None:
        fail(
            "temperature='dtd' with dtd_mode='flsw' is not defined with teacher_topk: flsw compares the "
            "student's and the teacher's logit vectors; use dtd_mode='cwsm' (the student's confidence)"
        )
    _in("dtd_t0", dtd_t0, 0.0, math.inf, True, True)
    _in("dtd_beta", dtd_beta, -math.inf, math.inf, True, True)
    _in("dtd_gamma", dtd_gamma, 0.0, math.inf, False, True)
    _in("dtd_min_temperature", dtd_min_temperature, 0.0, math.inf, True, True)
    if teacher_gram is not None:
        width = teacher_hidden.shape[1] + 1 if teacher_hidden is not None else 0
        if tuple(teacher_gram.shape) != (width, width) or teacher_gram.dtype != opmath:
            fail(
                f"teacher_gram must be ({width}, {width}) {opmath}, the teacher lm_head's Gram matrix, "
                f"got {shape_str(teacher_gram.shape)} {teacher_gram.dtype}"
            )
        _on_device("teacher_gram", teacher_gram, student_hidden)


def check_fused_linear_kd_values(
    student_hidden,
    student_weight,
    student_bias,
    teacher_hidden,
    teacher_weight,
    teacher_bias,
    topk_ids,
    topk_logprobs,
    target,
    temperature,
    teacher_gram,
    divergence,
    beta,
    ka,
    lsr_p,
    scale_tau2,
    ce_weight,
    ignore_index,
    reduction,
    vocab_size,
    chunk_size,
    dtd_mode,
    *rest,
) -> None:
    """Labels and top-k ids in range, ids distinct, log-probabilities, temperatures > 0 (reads the
    values: CPU tensors)."""
    if target is not None:
        bad = (target != ignore_index) & ((target < 0) | (target >= vocab_size))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            fail(
                f"target[{i}] = {int(target[i])} is out of range: labels must be in [0, {vocab_size}) "
                f"(vocab_size) or equal ignore_index ({ignore_index})"
            )
    if topk_ids is not None:
        bad = (topk_ids < 0) | (topk_ids >= vocab_size)
        if bool(bad.any()):
            n, i = (int(v) for v in bad.nonzero()[0])
            fail(f"teacher_topk ids[{n}, {i}] = {int(topk_ids[n, i])} is out of range [0, {vocab_size})")
        ordered = topk_ids.sort(dim=1).values
        twice = ordered[:, 1:] == ordered[:, :-1]
        if bool(twice.any()):
            n, i = (int(v) for v in twice.nonzero()[0])
            fail(f"teacher_topk ids row {n} lists id {int(ordered[n, i])} twice")
        if bool(torch.isnan(topk_logprobs).any()) or bool((topk_logprobs > 1e-4).any()):
            fail("teacher_topk logprobs must be log-probabilities (<= 0, not NaN)")
        if bool((topk_logprobs.exp().sum(dim=1) > 1.001).any()):
            fail("teacher_topk logprobs sum to a probability above 1 in some row")
    if dtd_mode == NO_DTD:
        checks.check_temperature_values(temperature)


def check_fused_linear_kd_backward(grad_rows, temperature_used, *args) -> None:
    """The backward op's arguments: the driver op's, the incoming per-row gradient and the
    forward's temperatures, (N,) of the opmath type."""
    check_fused_linear_kd(*args[:-3])
    hidden = args[0]
    rows, opmath = hidden.shape[0], opmath_dtype(hidden.dtype)
    for name, t in (("grad_rows", grad_rows), ("temperature_used", temperature_used)):
        t = _tensor(name, t)
        if tuple(t.shape) != (rows,) or t.dtype != opmath:
            fail(f"{name} must be ({rows},) {opmath}, got {shape_str(t.shape)} {t.dtype}")
        _on_device(name, t, hidden)


def check_for_reference(c: Checked, numbers: tuple) -> None:
    """The driver op's checks on the arguments the reference runs on (values on CPU tensors,
    eagerly); `numbers` are the driver op's arguments from beta to ignore_index and from dtd_t0 to
    dtd_min_temperature, as in `op_arguments`."""
    args = op_arguments(c, None, numbers, (False, False, False), "cpu")
    check_fused_linear_kd(*args)
    if values_readable(c.student_hidden):
        check_fused_linear_kd_values(*args)


def op_arguments(c: Checked, teacher_gram, numbers: tuple, grads: tuple, row_backend: str) -> tuple:
    """The driver op's argument tuple from converted arguments. numbers: (beta, lsr_p, ce_weight,
    ignore_index, dtd_t0, dtd_beta, dtd_gamma, dtd_min_temperature)."""
    beta, lsr_p, ce_weight, ignore_index, *dtd = numbers
    tau = c.temperature if c.temperature is not None else c.student_hidden.new_empty((0,))
    return (
        c.student_hidden,
        c.student_weight,
        c.student_bias,
        c.teacher_hidden,
        c.teacher_weight,
        c.teacher_bias,
        c.topk_ids,
        c.topk_logprobs,
        c.target,
        tau,
        teacher_gram,
        c.divergence,
        beta,
        c.ka,
        lsr_p,
        c.scale_tau2,
        ce_weight,
        ignore_index,
        c.reduction,
        c.vocab,
        c.chunk_size,
        c.dtd_mode,
        *dtd,
        *grads,
        row_backend,
    )


# ---- the row op's check (csrc/checks/fused_linear_kd.cpp says the same) ---------------------------


def check_fused_linear_kd_rows(
    student,
    teacher,
    topk_ids,
    topk_logprobs,
    target,
    temperature,
    divergence,
    beta,
    ka,
    lsr_p,
    scale_tau2,
    ce_weight,
    ignore_index,
    compute_grad,
    grad_scale=1.0,
) -> None:
    """The row op's arguments, without reading values."""
    if (teacher is None) == (topk_ids is None):
        fail(
            "give either teacher logits or a top-k teacher (topk_ids and topk_logprobs), not both or neither"
        )
    if (topk_ids is None) != (topk_logprobs is None):
        fail("topk_ids and topk_logprobs go together")
    # Without teacher logits the student's are checked as a pair with themselves: the same words.
    checks.check_logit_pair(student, teacher if teacher is not None else student)
    if student.stride(1) != 1 or student.stride(0) < student.shape[1]:
        fail(
            f"student_logits must have unit stride along classes (the gradient is written over them), "
            f"got strides {shape_str(student.stride())}"
        )
    rows, classes = student.shape
    if topk_ids is not None:
        checks.check_tensor(topk_ids, "topk_ids")
        checks.check_tensor(topk_logprobs, "topk_logprobs")
        if topk_ids.dim() != 2 or topk_ids.shape[0] != rows:
            fail(f"topk_ids must have shape (rows, K) with rows = {rows}, got {shape_str(topk_ids.shape)}")
        if not 1 <= topk_ids.shape[1] <= classes:
            fail(f"topk_ids must list 1 <= K <= {classes} ids per row, got K = {topk_ids.shape[1]}")
        opmath = opmath_dtype(student.dtype)
        checks.check_dtype_and_device(topk_ids, "topk_ids", student, "student_logits", torch.int64)
        if topk_logprobs.shape != topk_ids.shape:
            fail(
                f"topk_logprobs must have the shape of topk_ids {shape_str(topk_ids.shape)}, "
                f"got {shape_str(topk_logprobs.shape)}"
            )
        checks.check_dtype_and_device(topk_logprobs, "topk_logprobs", student, "student_logits", opmath)
        if ka != 0:
            fail(
                f"ka must be 0 (none) with a top-k teacher, got {ka}: knowledge adjustment needs the teacher's logits"
            )
    checks.check_target(target, student)
    if not 0 <= divergence <= 5:
        fail(f"divergence must be 0 (forward_kl) to 5 (tvd), got {divergence}")
    if divergence == JSD and not 0.0 < beta < 1.0:
        fail(f"beta must be in (0, 1) for jsd, got {num(beta)}")
    if divergence in (SKEW_FORWARD_KL, SKEW_REVERSE_KL) and not 0.0 <= beta < 1.0:
        fail(f"beta must be in [0, 1) for a skew KL, got {num(beta)}")
    checks.check_ka(ka, target)
    if target is None and ce_weight != 0.0:
        fail("ce_weight != 0 needs target labels, but target is None")
    if not 0.0 < lsr_p <= 1.0:
        fail(f"lsr_p must be in (0, 1], got {num(lsr_p)}")
    if not math.isfinite(ce_weight):
        fail(f"ce_weight must be finite, got {num(ce_weight)}")
    if not math.isfinite(grad_scale):
        fail(f"grad_scale must be finite, got {num(grad_scale)}")
    checks.check_tensor(temperature, "temperature")
    if temperature.dim() != 1 or temperature.shape[0] != rows:
        fail(f"temperature must have shape (batch,) = ({rows},), got {shape_str(temperature.shape)}")
    opmath = opmath_dtype(student.dtype)
    if temperature.dtype != opmath:
        fail(f"temperature must be {opmath} for {student.dtype} logits, got {temperature.dtype}")
    if temperature.device != student.device:
        fail(f"temperature is on {temperature.device} but student_logits is on {student.device}")


def check_fused_linear_kd_rows_values(student, teacher, topk_ids, topk_logprobs, target, temperature, *rest):
    """Labels and ids in range, ids distinct, temperatures finite and > 0 (reads the values: CPU
    tensors; the C++ CPU op reads them likewise, the GPU kernels assert)."""
    ignore_index = rest[6]
    classes = student.shape[1]
    if target is not None:
        checks.check_labels(target, classes, ignore_index)
    if topk_ids is not None:
        bad = (topk_ids < 0) | (topk_ids >= classes)
        if bool(bad.any()):
            n, i = (int(v) for v in bad.nonzero()[0])
            fail(f"topk_ids[{n}, {i}] = {int(topk_ids[n, i])} is out of range [0, {classes})")
        ordered = topk_ids.sort(dim=1).values
        twice = ordered[:, 1:] == ordered[:, :-1]
        if bool(twice.any()):
            n, i = (int(v) for v in twice.nonzero()[0])
            fail(f"topk_ids row {n} lists id {int(ordered[n, i])} twice")
    checks.check_temperature_values(temperature)
