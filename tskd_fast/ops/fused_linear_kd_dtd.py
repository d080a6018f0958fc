"""DTD temperatures of the fused linear + KD loss, computed without the N x V logits.

DTD (docs/methods.md §1.4 and §5.5) sets tau_n = max(t0 + beta (mean(w) - w_n), min_temperature),
the mean over the rows not ignored, so every row's temperature depends on every other row: the
weights must all be known before the first chunk's KD loss. How each weight is had:

* flsw, w = (1 - cos(z, v))^gamma of the logit vectors z = W_s x_s + b_s and v = W_t x_t + b_t.
  z.v, |z|^2 and |v|^2 are quadratic forms of the hidden states with the Gram matrices of the
  lm_heads (bias appended as a column): z.v = [x_s 1] (A_s^T A_t) [x_t 1]^T, A = [W | b]. Their
  cost is 2 V H_s (H_s + H_t) per call (the teacher's A_t^T A_t is computed once and cached, the
  teacher being frozen), against 2 N V (H_t + 3 H_s) for the loss itself: a few per cent when
  N >> H_s, where a pass over the logits would cost a second teacher and student matmul. With
  ka="ps" the cosine sees the probability-shifted teacher, whose argmax is a pass over the
  teacher's logits: that combination runs one more teacher matmul, chunk by chunk.
* cwsm, w = 1 / (max softmax(z) + 1e-3): the student's logits are needed; one more student
  matmul, chunk by chunk, keeps only each row's logsumexp minus max.
Weights are computed in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import weakref

import torch

from tskd_fast.ops.dtd import DTD_MODES
from tskd_fast.ops.fused_linear_kd_chunks import Linear
from tskd_fast.reference.dtd import CWSM_EPS, FLSW_NORM_EPS, temperatures_from_weights

# Rows of the lm_head upcast at a time when a Gram matrix is formed from float16/bfloat16 weights
# off CUDA, and the most intermediate values the quadratic forms of one part of the rows hold.
GRAM_ROWS = 8192
FORM_ELEMENTS = 1 << 24


def _product(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """a^T b in `dtype`. float16/bfloat16 operands: on CUDA one matmul with float32 output (the
    tensor cores, products exact, sums in float32); elsewhere GRAM_ROWS rows upcast at a time."""
    if a.dtype == dtype and b.dtype == dtype:
        return a.t() @ b
    if a.device.type == "cuda" and a.dtype == b.dtype and dtype == torch.float32:
        return torch.mm(a.t(), b, out_dtype=torch.float32)
    out = torch.zeros(a.shape[1], b.shape[1], dtype=dtype, device=a.device)
    for start in range(0, a.shape[0], GRAM_ROWS):
        part = slice(start, start + GRAM_ROWS)
        out.addmm_(a[part].t().to(dtype), b[part].to(dtype))
    return out


def gram(
    a: torch.Tensor, a_bias: torch.Tensor | None, b: torch.Tensor, b_bias: torch.Tensor | None, dtype
) -> torch.Tensor:
    """[A | a_bias]^T [B | b_bias], (H_a + 1, H_b + 1) in `dtype`, over the rows of A and B (the
    real vocabulary); a missing bias is a zero column."""
    ha, hb = a.shape[1], b.shape[1]
    out = torch.zeros(ha + 1, hb + 1, dtype=dtype, device=a.device)
    out[:ha, :hb] = _product(a, b, dtype)
    if a_bias is not None:
        out[ha, :hb] = _product(a_bias.unsqueeze(1), b, dtype).squeeze(0)
    if b_bias is not None:
        out[:ha, hb] = _product(a, b_bias.unsqueeze(1), dtype).squeeze(1)
    if a_bias is not None and b_bias is not None:
        out[ha, hb] = torch.dot(a_bias.to(dtype), b_bias.to(dtype))
    return out


_TEACHER_GRAMS: dict = {}


def cached_teacher_gram(weight: torch.Tensor, bias: torch.Tensor | None, vocab: int, dtype) -> torch.Tensor:
    """The teacher's Gram matrix, kept while the same weight and bias tensors are passed unchanged
    (same objects, same in-place version counters); called eagerly only."""
    key = (id(weight), id(bias), vocab, dtype, weight.device)
    versions = (weight._version, bias._version if bias is not None else -1, weight.data_ptr())
    hit = _TEACHER_GRAMS.get(key)
    if hit is not None:
        ref_w, ref_b, seen, value = hit
        if ref_w() is weight and (ref_b() if ref_b is not None else None) is bias and seen == versions:
            return value
    w, b = weight[:vocab], _cut(bias, vocab)
    value = gram(w, b, w, b, dtype)
    _TEACHER_GRAMS.clear()  # one teacher at a time: a stale entry would pin its Gram
    _TEACHER_GRAMS[key] = (
        weakref.ref(weight),
        weakref.ref(bias) if bias is not None else None,
        versions,
        value,
    )
    return value


def _cut(bias: torch.Tensor | None, vocab: int) -> torch.Tensor | None:
    return bias[:vocab] if bias is not None else None


def _with_one(x: torch.Tensor, dtype) -> torch.Tensor:
    return torch.cat([x.to(dtype), torch.ones(x.shape[0], 1, dtype=dtype, device=x.device)], dim=1)


def flsw_weights(
    student: Linear,
    teacher: Linear,
    vocab: int,
    gamma: float,
    dtype: torch.dtype,
    teacher_gram: torch.Tensor | None,
    swap: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    chunk_size: int,
) -> torch.Tensor:
    """(N,) flsw weights from the Gram forms. swap: (rows swapped, z_j - z_y, v_y - v_j) of the
    probability shift, which changes z.v by (z_j - z_y)(v_y - v_j)."""
    ws, bs = student.weight[:vocab], _cut(student.bias, vocab)
    wt, bt = teacher.weight[:vocab], _cut(teacher.bias, vocab)
    g_st = gram(ws, bs, wt, bt, dtype)
    g_ss = gram(ws, bs, ws, bs, dtype)
    g_tt = teacher_gram if teacher_gram is not None else gram(wt, bt, wt, bt, dtype)
    rows, hs = student.hidden.shape
    ht = teacher.hidden.shape[1]
    # One product of the student rows with [G_st | G_ss] gives both of their forms; rows in parts
    # of at most FORM_ELEMENTS intermediate values (all of them at once for most batches).
    g_s = torch.cat([g_st, g_ss], dim=1)
    dot = torch.empty(rows, dtype=dtype, device=student.hidden.device)
    zz, vv = torch.empty_like(dot), torch.empty_like(dot)
    step = max(chunk_size, FORM_ELEMENTS // (hs + 2 * ht + 3))
    for start in range(0, rows, step):
        part = slice(start, min(start + step, rows))
        xs = _with_one(student.hidden[part].detach(), dtype)
        xt = _with_one(teacher.hidden[part].detach(), dtype)
        proj = xs @ g_s
        dot[part] = (proj[:, : ht + 1] * xt).sum(dim=1)
        zz[part] = (proj[:, ht + 1 :] * xs).sum(dim=1)
        vv[part] = ((xt @ g_tt) * xt).sum(dim=1)
    if swap is not None:
        swapped, dz, dv = swap
        dot = torch.where(swapped, dot + dz * dv, dot)
    norms = (zz.clamp_min(0).sqrt() + FLSW_NORM_EPS) * (vv.clamp_min(0).sqrt() + FLSW_NORM_EPS)
    gap = (1.0 - dot / norms).clamp(0.0, 2.0)
    return gap.pow(gamma)


def probability_shift_terms(
    student: Linear,
    teacher: Linear,
    target: torch.Tensor,
    ignore_index: int,
    vocab: int,
    dtype: torch.dtype,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(swapped, z_j - z_y, v_y - v_j) per row, j the teacher's argmax: one pass over the
    teacher's logits (chunk by chunk) for j, v_j and v_y; z_j and z_y are row-wise dot products
    with the gathered student weight rows."""
    rows = target.shape[0]
    device = target.device
    buf = torch.empty(min(chunk_size, rows), vocab, dtype=teacher.hidden.dtype, device=device)
    argmax = torch.empty(rows, dtype=torch.long, device=device)
    v_j = torch.empty(rows, dtype=dtype, device=device)
    v_y = torch.empty_like(v_j)
    label = torch.where(target == ignore_index, 0, target)
    for start in range(0, rows, chunk_size):
        part = slice(start, min(start + chunk_size, rows))
        t = teacher.logits(part, vocab, buf[: part.stop - part.start])
        argmax[part] = t.argmax(dim=1)
        v_j[part] = t.gather(1, argmax[part, None]).squeeze(1).to(dtype)
        v_y[part] = t.gather(1, label[part, None]).squeeze(1).to(dtype)
    x = student.hidden.detach().to(dtype)
    w = student.weight[:vocab].detach()

    def student_logit(index: torch.Tensor) -> torch.Tensor:
        z = (x * w[index].to(dtype)).sum(dim=1)
        if student.bias is not None:
            z = z + student.bias.detach()[index].to(dtype)
        return z

    swapped = (target != ignore_index) & (argmax != target)
    return swapped, student_logit(argmax) - student_logit(label), v_y - v_j


def cwsm_weights(student: Linear, vocab: int, dtype: torch.dtype, chunk_size: int) -> torch.Tensor:
    """(N,) cwsm weights 1 / (max softmax(z) + 1e-3): one pass over the student's logits."""
    rows = student.hidden.shape[0]
    device = student.hidden.device
    buf = torch.empty(min(chunk_size, rows), vocab, dtype=student.hidden.dtype, device=device)
    gap = torch.empty(rows, dtype=dtype, device=device)
    for start in range(0, rows, chunk_size):
        part = slice(start, min(start + chunk_size, rows))
        z = student.logits(part, vocab, buf[: part.stop - part.start])
        if z.dtype != dtype:
            z = z.to(dtype)
        # log sum exp(z - max z), in place in the chunk's buffer: three passes, no temporary.
        top = z.amax(dim=1, keepdim=True)
        gap[part] = z.sub_(top).exp_().sum(dim=1).log_()
    return 1.0 / (torch.exp(-gap) + CWSM_EPS)


def dtd_temperatures(
    mode: int,
    student: Linear,
    teacher: Linear | None,
    target: torch.Tensor | None,
    ka: int,
    ignore_index: int,
    vocab: int,
    t0: float,
    beta: float,
    gamma: float,
    min_temperature: float,
    dtype: torch.dtype,
    teacher_gram: torch.Tensor | None,
    chunk_size: int,
) -> torch.Tensor:
    """(N,) DTD temperatures (mode 0 flsw, 1 cwsm), the batch mean over the rows not ignored;
    ignored rows get t0. ka: 1 (probability shift) makes flsw see the shifted teacher."""
    with torch.no_grad():
        if mode == DTD_MODES["cwsm"]:
            w = cwsm_weights(student, vocab, dtype, chunk_size)
        else:
            swap = None
            if ka == 1 and target is not None:
                swap = probability_shift_terms(
                    student, teacher, target, ignore_index, vocab, dtype, chunk_size
                )
            w = flsw_weights(student, teacher, vocab, gamma, dtype, teacher_gram, swap, chunk_size)
        if target is not None:
            w = torch.where(target != ignore_index, w, torch.full_like(w, float("nan")))
        return temperatures_from_weights(w, t0, beta, min_temperature)
