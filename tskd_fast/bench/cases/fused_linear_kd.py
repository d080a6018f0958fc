"""The fused linear + KD loss of LLM distillation (tau = 2, mean over the kept tokens) against
eager PyTorch on full logits, a chunked reference under torch.compile (the design of
Liger-Kernel's chunked losses: a compiled per-chunk loss and gradient, accumulated in Python) and,
when installed, Liger-Kernel's LigerFusedLinearJSDLoss itself.

Liger's JSD has the same beta convention (m = beta p_teacher + (1 - beta) q_student, loss
beta KL(p||m) + (1 - beta) KL(q||m)) and at beta = 0 computes KL(p||q), forward KL; it has no
tau^2 factor, so it gets weight_soft_loss = tau^2 (and weight_hard_loss = 0), and like the fused
op it divides by the number of tokens not ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as torch_f

from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.bench.cases import Family, Inputs, Shape, Target, element_size, generator, randn
from tskd_fast.reference.fused_linear_kd import divergence_rows

TEMPERATURE = 2.0
BETA = 0.5
IGNORE_EVERY = 16  # one token in 16 is ignored (padding, prompts)
REFERENCE_CHUNK = 1024  # rows per chunk of the chunked baselines (Liger's default)


def _beta(divergence: str) -> float:
    return BETA if divergence == "jsd" else 0.0


def eager(xs, ws, xt, wt, y, divergence):
    """Plain PyTorch on full logits: the N x V logits of both models in memory."""
    return reference.fused_linear_kd(
        xs, ws, xt, wt, y, divergence=divergence, beta=BETA, temperature=TEMPERATURE
    )


def fused(backend: str):
    def loss(xs, ws, xt, wt, y, divergence):
        return F.fused_linear_kd(
            xs, ws, xt, wt, y, divergence=divergence, beta=BETA, temperature=TEMPERATURE, backend=backend
        )

    return loss


def _chunk_loss(xs, ws, xt, wt, y, count, divergence: str):
    """One chunk's share of the mean loss, on its logits."""
    s = (xs @ ws.t()).float() / TEMPERATURE
    t = (xt @ wt.t()).float() / TEMPERATURE
    rows = divergence_rows(torch_f.log_softmax(t, dim=1), torch_f.log_softmax(s, dim=1), divergence, BETA)
    rows = rows * (TEMPERATURE * TEMPERATURE) * (y != -100)
    return rows.sum() / count


_COMPILED_CHUNKS: dict[str, object] = {}


def _compiled_chunk(divergence: str):
    if divergence not in _COMPILED_CHUNKS:

        def step(xs, ws, xt, wt, y, count):
            return torch.func.grad_and_value(_chunk_loss, argnums=(0, 1))(
                xs, ws, xt, wt, y, count, divergence
            )

        _COMPILED_CHUNKS[divergence] = torch.compile(step, dynamic=False)
    return _COMPILED_CHUNKS[divergence]


class _ChunkedReference(torch.autograd.Function):
    """Loss and gradients chunk by chunk in the forward (a compiled grad_and_value per chunk),
    the backward scales them: Liger-Kernel's chunked-loss design in plain PyTorch."""

    @staticmethod
    def forward(ctx, xs, ws, xt, wt, y, divergence):
        step = _compiled_chunk(divergence)
        count = (y != -100).sum().clamp_min(1)
        grad_x = torch.empty_like(xs)
        grad_w = torch.zeros_like(ws)
        total = torch.zeros((), dtype=torch.float32, device=xs.device)
        for start in range(0, xs.shape[0], REFERENCE_CHUNK):
            part = slice(start, start + REFERENCE_CHUNK)
            (gx, gw), loss = step(xs[part], ws, xt[part], wt, y[part], count)
            grad_x[part] = gx
            grad_w.add_(gw)
            total.add_(loss)
        ctx.save_for_backward(grad_x, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad, grad_w * grad, None, None, None, None


def chunked_compile(xs, ws, xt, wt, y, divergence):
    return _ChunkedReference.apply(xs, ws, xt.detach(), wt.detach(), y, divergence)


def liger():
    """Liger-Kernel's LigerFusedLinearJSDLoss (compiled=True) with our options, or None."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss
    except ImportError:
        return None
    losses = {}

    def loss(xs, ws, xt, wt, y, divergence):
        if divergence not in losses:
            losses[divergence] = LigerFusedLinearJSDLoss(
                weight_hard_loss=0.0,
                weight_soft_loss=TEMPERATURE * TEMPERATURE,
                beta=_beta(divergence),
                temperature=TEMPERATURE,
                compiled=True,
                chunk_size=REFERENCE_CHUNK,
            )
        return losses[divergence](xs, ws, xt, wt, y)

    return loss


def extra_baselines(device: torch.device, dtype: torch.dtype) -> dict:
    found = {"chunked compile": chunked_compile}
    liger_loss = liger()
    if liger_loss is not None:
        found["liger"] = liger_loss
    return found


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> Inputs:
    rows, h_s, h_t, vocab, divergence = shape.dims
    gen = generator(rows, h_s, h_t, vocab)
    # Logits of standard deviation 2, as a trained lm_head gives.
    xs = randn((rows, h_s), gen, device, dtype, grad=True)
    ws = randn((vocab, h_s), gen, device, dtype, scale=2.0 / h_s**0.5, grad=True)
    xt = randn((rows, h_t), gen, device, dtype)
    wt = randn((vocab, h_t), gen, device, dtype, scale=2.0 / h_t**0.5)
    y = torch.randint(0, vocab, (rows,), generator=gen).to(device)
    y[::IGNORE_EVERY] = -100
    return Inputs(args=(xs, ws, xt, wt, y, divergence), grads=None, leaves=(xs, ws))


def minimal_bytes(shape: Shape, dtype: torch.dtype) -> int:
    rows, h_s, h_t, vocab, _ = shape.dims
    return (2 * rows * h_s + rows * h_t + 2 * vocab * h_s + vocab * h_t) * element_size(dtype)


def flops(shape: Shape, dtype: torch.dtype) -> float:
    """2 N V (H_t + 3 H_s): the teacher's and the student's logits, dX and dW."""
    rows, h_s, h_t, vocab, _ = shape.dims
    return 2.0 * rows * vocab * (h_t + 3 * h_s)


CPU_FKL = "2048x256x512x32000 fkl"
CPU_JSD = "2048x256x512x32000 jsd"
ISSUE_TARGETS = tuple(
    Target(
        vs_eager=1.0,
        vs_compile=None,
        shape=label,
        source="issue 18",
        faster_than=("chunked compile", "liger"),
        peak_share=(("eager", 0.1), ("liger", 0.5)),
    )
    for label in (CPU_FKL, CPU_JSD)
)

FAMILY = Family(
    name="fused_linear_kd",
    title="Fused linear + KD loss (LLM distillation), tau = 2, mean over kept tokens",
    functional="fused_linear_kd",
    shapes=(
        Shape(CPU_FKL, (2048, 256, 512, 32000, "forward_kl"), quick=True, device="cpu"),
        Shape(CPU_JSD, (2048, 256, 512, 32000, "jsd"), device="cpu"),
        # Llama-3 vocabulary, a 2048-wide student and a 4096-wide teacher, in bf16: on CUDA only.
        Shape(
            "8192x2048x4096x128256 fkl",
            (8192, 2048, 4096, 128256, "forward_kl"),
            quick=True,
            device="cuda",
            dtype="bfloat16",
        ),
        Shape(
            "8192x2048x4096x128256 jsd", (8192, 2048, 4096, 128256, "jsd"), device="cuda", dtype="bfloat16"
        ),
    ),
    make_inputs=make_inputs,
    reference=eager,
    fused=fused,
    minimal_bytes=minimal_bytes,
    bytes_doc="read the hidden states and lm_head weights, write dX and dW (the logits never leave the chip)",
    extra_baselines=extra_baselines,
    targets=ISSUE_TARGETS,
    compile_reference=False,
    flops=flops,
)
