"""The argument checks of tskd_fast.functional.fused_linear_kd: ValueError naming the argument.

Checks that read values (labels and top-k ids in range, ids distinct, log-probabilities, the
temperature tensor) run on eager CPU tensors only: on CUDA they would synchronise the stream, and
when compiling they would be data-dependent. The kernels check labels and ids there instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tskd_fast.ops.fused_linear_kd import DIVERGENCES, REDUCTIONS
from tskd_fast.ops.fused_linear_kd_dtd import DTD_MODES
from tskd_fast.ops.kd_loss import KA_MODES

SCALES = ("tau2", "none")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class Checked:
    """The arguments as the op takes them: tensors flattened to rows, names turned into codes."""

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
    lead_shape: tuple[int, ...]  # the leading shape of the hidden states (reduction "none")
    vocab: int
    chunk_size: int  # 0: chosen by the op


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _tensor(name: str, t, floating: bool = True) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    return t


def _same_device(name: str, t: torch.Tensor, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but student_hidden is on {ref.device}")


def _number(name: str, value, low=None, high=None, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(
            f"{name} must be in {lo}{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}{hi}, got {value}"
        )
    return value


def _eager_cpu(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _lm_head(side: str, hidden, weight, bias, lead: tuple[int, ...] | None, ref: torch.Tensor | None):
    hidden = _tensor(f"{side}_hidden", hidden)
    weight = _tensor(f"{side}_weight", weight)
    if hidden.dim() < 2:
        raise ValueError(f"{side}_hidden must be (N, H) or (..., H), got shape {tuple(hidden.shape)}")
    if lead is not None and tuple(hidden.shape[:-1]) != lead:
        raise ValueError(
            f"{side}_hidden has rows of shape {tuple(hidden.shape[:-1])} but student_hidden has "
            f"{lead}: one teacher row per student row"
        )
    if hidden.shape[:-1].numel() == 0:
        raise ValueError(f"{side}_hidden has no rows (shape {tuple(hidden.shape)})")
    width = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != width:
        raise ValueError(
            f"{side}_weight must have shape (V, H) with H = {width} (the width of {side}_hidden), "
            f"got {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype:
        raise ValueError(
            f"{side}_weight is {weight.dtype} but {side}_hidden is {hidden.dtype}: give both in one dtype "
            f"(or run under torch.autocast)"
        )
    if bias is not None:
        bias = _tensor(f"{side}_bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(
                f"{side}_bias must have shape (V,) = ({weight.shape[0]},), got {tuple(bias.shape)}"
            )
        if bias.dtype != weight.dtype:
            raise ValueError(f"{side}_bias is {bias.dtype} but {side}_weight is {weight.dtype}")
    for name, t in ((f"{side}_hidden", hidden), (f"{side}_weight", weight), (f"{side}_bias", bias)):
        if t is not None and ref is not None:
            _same_device(name, t, ref)
        if t is not None and t.dtype == torch.float64 and t.device.type != "cpu":
            raise ValueError(f"{name}: float64 is supported on the CPU only")
    return hidden.reshape(-1, width), weight, bias


def _vocab(vocab_size, student_rows: int, teacher_rows: int | None) -> int:
    if vocab_size is None:
        if teacher_rows is not None and teacher_rows != student_rows:
            raise ValueError(
                f"vocab_size is None but student_weight has {student_rows} rows and teacher_weight "
                f"{teacher_rows}: give vocab_size, the real vocabulary both lm_heads share"
            )
        return student_rows
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int or None, got {vocab_size!r}")
    for name, rows in (("student_weight", student_rows), ("teacher_weight", teacher_rows)):
        if rows is not None and vocab_size > rows:
            raise ValueError(f"vocab_size = {vocab_size} exceeds the {rows} rows of {name}")
    return vocab_size


def _target(target, lead: tuple[int, ...], rows: int, vocab: int, ignore_index: int, ref) -> torch.Tensor:
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex():
        raise ValueError("target must be an integer tensor of token ids")
    if tuple(target.shape) != lead and tuple(target.shape) != (rows,):
        raise ValueError(
            f"target must have shape {lead} (one label per row of student_hidden), got {tuple(target.shape)}"
        )
    _same_device("target", target, ref)
    target = target.reshape(rows).long()
    if _eager_cpu(target):
        bad = (target != ignore_index) & ((target < 0) | (target >= vocab))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"target[{i}] = {int(target[i])} is out of range: labels must be in [0, {vocab}) "
                f"(vocab_size) or equal ignore_index ({ignore_index})"
            )
    return target


def _topk(teacher_topk, lead: tuple[int, ...], rows: int, vocab: int, opmath, ref):
    if not isinstance(teacher_topk, tuple | list) or len(teacher_topk) != 2:
        raise ValueError("teacher_topk must be a pair (ids, logprobs)")
    ids, logprobs = teacher_topk
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex():
        raise ValueError("teacher_topk ids must be an integer tensor (N, K)")
    logprobs = _tensor("teacher_topk logprobs", logprobs)
    if ids.dim() < 1 or tuple(ids.shape[:-1]) != lead:
        raise ValueError(f"teacher_topk ids must have shape {(*lead, 'K')}, got {tuple(ids.shape)}")
    if logprobs.shape != ids.shape:
        raise ValueError(
            f"teacher_topk logprobs must have the shape of the ids {tuple(ids.shape)}, got {tuple(logprobs.shape)}"
        )
    k = ids.shape[-1]
    if k < 1:
        raise ValueError("teacher_topk lists no ids (K = 0)")
    if k > vocab:
        raise ValueError(f"teacher_topk lists K = {k} ids per row, more than the vocabulary V = {vocab}")
    _same_device("teacher_topk ids", ids, ref)
    _same_device("teacher_topk logprobs", logprobs, ref)
    ids = ids.reshape(rows, k).long()
    logprobs = logprobs.reshape(rows, k).to(opmath)
    if _eager_cpu(ids):
        bad = (ids < 0) | (ids >= vocab)
        if bool(bad.any()):
            n, i = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"teacher_topk ids[{n}, {i}] = {int(ids[n, i])} is out of range [0, {vocab})")
        ordered = ids.sort(dim=1).values
        twice = ordered[:, 1:] == ordered[:, :-1]
        if bool(twice.any()):
            n, i = (int(v) for v in twice.nonzero()[0])
            raise ValueError(f"teacher_topk ids row {n} lists id {int(ordered[n, i])} twice")
        if bool(torch.isnan(logprobs).any()) or bool((logprobs > 1e-4).any()):
            raise ValueError("teacher_topk logprobs must be log-probabilities (<= 0, not NaN)")
        if bool((logprobs.exp().sum(dim=1) > 1.001).any()):
            raise ValueError("teacher_topk logprobs sum to a probability above 1 in some row")
    return ids, logprobs


def _temperature(temperature, lead: tuple[int, ...], rows: int, opmath, ref) -> torch.Tensor | None:
    if isinstance(temperature, str):
        if temperature != "dtd":
            raise ValueError(f"temperature must be a float, a tensor or 'dtd', got {temperature!r}")
        return None
    if isinstance(temperature, torch.Tensor):
        if temperature.dim() > 0 and tuple(temperature.shape) not in (lead, (rows,)):
            raise ValueError(
                f"temperature must be a float, a 0-d tensor or a tensor of shape {lead} (one per row), "
                f"got shape {tuple(temperature.shape)}"
            )
        if temperature.numel() != 1:
            _same_device("temperature", temperature, ref)
        tau = temperature.detach().to(device=ref.device, dtype=opmath).reshape(-1).expand(rows).contiguous()
        if _eager_cpu(tau):
            low, high = (float(v) for v in torch.aminmax(tau))
            if not (low > 0 and high < math.inf):
                raise ValueError(f"temperature must be finite and > 0, got min {low}, max {high}")
        return tau
    value = _number("temperature", temperature, low=0.0, low_open=True)
    return torch.full((rows,), value, dtype=opmath, device=ref.device)


def check_fused_linear_kd(
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
    student_bias,
    teacher_bias,
    teacher_topk,
    lsr_p,
    scale,
    dtd_mode,
    dtd_t0,
    dtd_beta,
    dtd_gamma,
    dtd_min_temperature,
) -> Checked:
    """Every argument of fused_linear_kd checked; see its docstring for what each must be."""
    _choice("divergence", divergence, DIVERGENCES)
    _choice("ka", ka, KA_MODES)
    _choice("reduction", reduction, REDUCTIONS)
    _choice("scale", scale, SCALES)
    if divergence == "jsd":
        _number("beta", beta, 0.0, 1.0, low_open=True, high_open=True)
    elif divergence.startswith("skew"):
        _number("beta", beta, 0.0, 1.0, high_open=True)
    _number("lsr_p", lsr_p, 0.0, 1.0, low_open=True)
    _number("ce_weight", ce_weight)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    student_hidden_t = _tensor("student_hidden", student_hidden)
    lead = tuple(student_hidden_t.shape[:-1])
    s_hidden, s_weight, s_bias = _lm_head("student", student_hidden, student_weight, student_bias, None, None)
    rows = s_hidden.shape[0]
    opmath = torch.float64 if s_hidden.dtype == torch.float64 else torch.float32
    has_teacher = teacher_hidden is not None or teacher_weight is not None
    if has_teacher and teacher_topk is not None:
        raise ValueError("give either teacher_hidden and teacher_weight or teacher_topk, not both")
    if not has_teacher and teacher_topk is None:
        raise ValueError(
            "a teacher is needed: teacher_hidden and teacher_weight, or teacher_topk=(ids, logprobs)"
        )
    t_hidden = t_weight = t_bias = ids = logprobs = None
    if has_teacher:
        if teacher_hidden is None or teacher_weight is None:
            missing = "teacher_hidden" if teacher_hidden is None else "teacher_weight"
            raise ValueError(f"{missing} is None: teacher_hidden and teacher_weight go together")
        t_hidden, t_weight, t_bias = _lm_head(
            "teacher", teacher_hidden, teacher_weight, teacher_bias, lead, s_hidden
        )
    elif teacher_bias is not None:
        raise ValueError("teacher_bias is given without teacher_weight")
    vocab = _vocab(vocab_size, s_weight.shape[0], t_weight.shape[0] if t_weight is not None else None)
    if teacher_topk is not None:
        ids, logprobs = _topk(teacher_topk, lead, rows, vocab, opmath, s_hidden)
        if ka != "none":
            raise ValueError(
                f"ka={ka!r} is not defined with teacher_topk: knowledge adjustment needs the teacher's "
                f"full distribution (its argmax and every probability); use ka='none'"
            )
    needed_for = f"ka={ka!r}" if ka != "none" else ("ce_weight != 0" if ce_weight != 0.0 else None)
    if target is None:
        if needed_for is not None:
            raise ValueError(f"{needed_for} needs target labels, but target is None")
        labels = None
    else:
        labels = _target(target, lead, rows, vocab, ignore_index, s_hidden)
    tau = _temperature(temperature, lead, rows, opmath, s_hidden)
    if tau is None:
        _choice("dtd_mode", dtd_mode, DTD_MODES)
        if dtd_mode == "flsw" and teacher_topk is not None:
            raise ValueError(
                "temperature='dtd' with dtd_mode='flsw' is not defined with teacher_topk: flsw compares the "
                "student's and the teacher's logit vectors; use dtd_mode='cwsm' (the student's confidence)"
            )
        _number("dtd_t0", dtd_t0, low=0.0, low_open=True)
        _number("dtd_beta", dtd_beta)
        _number("dtd_gamma", dtd_gamma, low=0.0)
        _number("dtd_min_temperature", dtd_min_temperature, low=0.0, low_open=True)
    return Checked(
        s_hidden,
        s_weight,
        s_bias,
        t_hidden,
        t_weight,
        t_bias,
        ids,
        logprobs,
        labels,
        tau,
        lead,
        vocab,
        chunk_size or 0,
    )
