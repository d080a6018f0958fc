"""The chunked driver of the fused linear + KD loss: matmuls and the row op, chunk by chunk.

For each chunk of rows the student's (and the teacher's) logits go through an ATen matmul into a
buffer of the chunk's size, the row op writes each row's loss and, in place of the student logits,
their gradient, and the student's dX, dW (and db) take the chunk's share at once. No N x V tensor
exists; the buffers hold chunk_size x V logits. The driver is device-agnostic: the row op of the
device (C++ CPU or CUDA, Triton, or the PyTorch row function) is passed in, and everything else is
ATen, so the same loop runs on every backend.

dW and db accumulate in float32 for float16/bfloat16 weights: each chunk's product is rounded
once to the weight's dtype (as one matmul would) and added to a float32 sum, so the error does
not grow with the number of chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Chunk buffers (the student's and the teacher's logits of one chunk) at most this large when the
# chunk size is chosen. Every chunk reads the lm_head weights again (W_s twice, W_t once, dW read
# and written), so small chunks pay that traffic many times over: on the CPU the budget keeps it a
# small share of the matmuls' time while the peak memory stays a small share of the full logits
# (benchmarks/README.md has the measurement); on CUDA, large enough that the matmuls fill the
# GPU, capped by the free memory.
CPU_CHUNK_BYTES = 128 << 20
CUDA_CHUNK_BYTES = 512 << 20
CUDA_FREE_SHARE = 8  # at most 1/8 of the free memory


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the dW / db sums for weights of `dtype` (float32 for float16 and bfloat16)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def choose_chunk_size(rows: int, vocab: int, bytes_per_row: int, device: torch.device) -> int:
    """Rows per chunk from N, V and the memory: chunk buffers of at most CPU_CHUNK_BYTES (CPU) or
    min(CUDA_CHUNK_BYTES, free / 8) (CUDA), in multiples of 64 rows when there are more."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = max(min(CUDA_CHUNK_BYTES, free // CUDA_FREE_SHARE), 64 << 20)
    else:
        budget = CPU_CHUNK_BYTES
    chunk = max(1, budget // max(bytes_per_row, 1))
    if chunk >= 128:
        chunk -= chunk % 64
    return int(min(rows, chunk))


@dataclass
class Linear:
    """One side's lm_head: hidden (N, H), weight (V_w, H) and bias (V_w,) or None; only the first
    `vocab` rows of the weight are used (a padded vocabulary)."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None

    def logits(self, rows: slice, vocab: int, out: torch.Tensor) -> torch.Tensor:
        """hidden[rows] @ weight[:vocab].T (+ bias) into `out` (chunk, vocab)."""
        x = self.hidden[rows]
        w = self.weight[:vocab]
        if self.bias is None:
            return torch.mm(x, w.t(), out=out)
        return torch.addmm(self.bias[:vocab], x, w.t(), out=out)


@dataclass
class RowOptions:
    """The row op's scalar arguments (tskd_fast::fused_linear_kd_rows)."""

    divergence: int
    beta: float
    ka: int
    lsr_p: float
    scale_tau2: bool
    ce_weight: float
    ignore_index: int


@dataclass
class Grads:
    """What one pass produces besides the row losses: dX (N, H_s) in the hidden's dtype, and the
    sums dW (V_w, H_s) and db (V_w,) in accumulator_dtype; None where not asked for."""

    hidden: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None


class _WeightGrad:
    """dW += G^T X chunk by chunk, in the accumulator dtype (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, vocab: int, hidden_dtype: torch.dtype) -> None:
        acc = accumulator_dtype(weight.dtype)
        self.sum = torch.empty(weight.shape, dtype=acc, device=weight.device)
        if vocab < weight.shape[0]:
            self.sum[vocab:].zero_()
        self.active = self.sum[:vocab]
        self.started = False
        self.product = None if acc == hidden_dtype else torch.empty_like(self.active, dtype=hidden_dtype)

    def add(self, g: torch.Tensor, x: torch.Tensor) -> None:
        if self.product is None:
            if self.started:
                self.active.addmm_(g.t(), x)
            else:  # the first chunk writes instead of adding to zeros
                torch.mm(g.t(), x, out=self.active)
        else:
            torch.mm(g.t(), x, out=self.product)
            if self.started:
                self.active.add_(self.product)
            else:
                self.active.copy_(self.product)
        self.started = True

    def result(self) -> torch.Tensor:
        if not self.started:
            self.active.zero_()
        return self.sum


RowOp = Callable[..., torch.Tensor]


def run_chunks(
    row_op: RowOp,
    student: Linear,
    teacher: Linear | None,
    topk: tuple[torch.Tensor, torch.Tensor] | None,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    options: RowOptions,
    vocab: int,
    chunk_size: int,
    want: tuple[bool, bool, bool],
    grad_scale: float = 1.0,
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Grads]:
    """Every row through the matmuls and the row op, chunk_size rows at a time.

    Returns the (N,) row losses (opmath) and the gradients asked for by want = (hidden, weight,
    bias), of sum_n row_weights[n] * grad_scale * loss_n (row_weights None: all 1). The row
    weights are applied to the small side of each product (the chunk's hidden rows, dX rows and
    db's matrix-vector product), never to the chunk's logits.
    """
    x = student.hidden
    rows = x.shape[0]
    device, dtype = x.device, x.dtype
    opmath = temperature.dtype
    want_hidden, want_weight, want_bias = want
    compute_grad = any(want)
    row_loss = torch.empty(rows, dtype=opmath, device=device)
    s_buf = torch.empty(min(chunk_size, rows), vocab, dtype=dtype, device=device)
    t_buf = t_cast = None
    if teacher is not None:
        t_buf = torch.empty(s_buf.shape[0], vocab, dtype=teacher.hidden.dtype, device=device)
        if teacher.hidden.dtype != dtype:
            t_cast = torch.empty_like(s_buf)
    d_hidden = torch.empty_like(x) if want_hidden else None
    d_weight = _WeightGrad(student.weight, vocab, dtype) if want_weight else None
    d_bias = None
    if want_bias:
        d_bias = torch.zeros(student.bias.shape, dtype=accumulator_dtype(student.bias.dtype), device=device)
    for start in range(0, rows, chunk_size):
        part = slice(start, min(start + chunk_size, rows))
        n = part.stop - part.start
        s = student.logits(part, vocab, s_buf[:n])
        t = None
        if teacher is not None:
            t = teacher.logits(part, vocab, t_buf[:n])
            if t_cast is not None:
                t = t_cast[:n].copy_(t)
        ids = topk[0][part] if topk is not None else None
        logprobs = topk[1][part] if topk is not None else None
        labels = target[part] if target is not None else None
        row_loss[part] = row_op(
            s,
            t,
            ids,
            logprobs,
            labels,
            temperature[part],
            options.divergence,
            options.beta,
            options.ka,
            options.lsr_p,
            options.scale_tau2,
            options.ce_weight,
            options.ignore_index,
            compute_grad,
            grad_scale,
        )
        if not compute_grad:
            continue
        weights = row_weights[part].to(dtype).unsqueeze(1) if row_weights is not None else None
        w = student.weight[:vocab]
        if d_hidden is not None:
            torch.mm(s, w, out=d_hidden[part])
            if weights is not None:
                d_hidden[part].mul_(weights)
        if d_weight is not None:
            d_weight.add(s, x[part] if weights is None else x[part] * weights)
        if d_bias is not None:
            if weights is None:
                d_bias[:vocab].add_(s.sum(dim=0, dtype=d_bias.dtype))
            else:
                d_bias[:vocab].add_(torch.mv(s.t(), weights.squeeze(1)).to(d_bias.dtype))
    grads = Grads(d_hidden, d_weight.result() if d_weight is not None else None, d_bias)
    return row_loss, grads
