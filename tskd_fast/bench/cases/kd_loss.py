"""The KD loss (T = 4, batchmean) against the reference and the DistillKL module people copy."""

from __future__ import annotations

import torch
import torch.nn.functional as torch_f

from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.bench.cases import Family, Inputs, Shape, Target, element_size, generator, randn

TEMPERATURE = 4.0


def reference_kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return reference.kd_loss(student, teacher, temperature=TEMPERATURE)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The DistillKL module of RepDistiller / ReviewKD / mdistiller (T^2 KL, batchmean)."""
    t = TEMPERATURE
    return torch_f.kl_div(
        torch_f.log_softmax(student / t, dim=1), torch_f.softmax(teacher / t, dim=1), reduction="batchmean"
    ) * (t * t)


def fused(backend: str):
    def loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.kd_loss(student, teacher, temperature=TEMPERATURE, backend=backend)

    return loss


def liger_kl():
    """Liger-Kernel's KL divergence (its Triton kernel) after eager softmaxes; None if not installed."""
    try:
        from liger_kernel.transformers import LigerKLDIVLoss
    except ImportError:
        return None
    kl = LigerKLDIVLoss(reduction="batchmean")
    t = TEMPERATURE

    def loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return kl(torch_f.log_softmax(student / t, dim=1), torch_f.softmax(teacher / t, dim=1)) * (t * t)

    return loss


def extra_baselines(device: torch.device, dtype: torch.dtype) -> dict:
    found = {"eager DistillKL": distill_kl}
    liger = liger_kl() if device.type == "cuda" else None
    if liger is not None:
        found["liger KLDiv"] = liger
    return found


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> Inputs:
    rows, classes = shape.dims
    gen = generator(rows, classes)
    student = randn((rows, classes), gen, device, dtype, scale=3.0, grad=True)
    teacher = randn((rows, classes), gen, device, dtype, scale=3.0)
    return Inputs(args=(student, teacher), grads=None, leaves=(student,))


def minimal_bytes(shape: Shape, dtype: torch.dtype) -> int:
    rows, classes = shape.dims
    return 3 * rows * classes * element_size(dtype)


FAMILY = Family(
    name="kd_loss",
    title="KD loss, T = 4, batchmean",
    functional="kd_loss",
    shapes=(
        Shape("128x100", (128, 100)),
        Shape("1024x100", (1024, 100)),
        Shape("4096x1000", (4096, 1000), quick=True),
        Shape("1024x32000", (1024, 32000)),
        # An LLM vocabulary (Llama 3), distilled in bf16: on CUDA only (3 GiB of bf16 logits).
        Shape("4096x128256", (4096, 128256), quick=True, device="cuda", dtype="bfloat16"),
    ),
    make_inputs=make_inputs,
    reference=reference_kd,
    fused=fused,
    minimal_bytes=minimal_bytes,
    bytes_doc="read student and teacher logits, write the student gradient: 3·B·C elements",
    extra_baselines=extra_baselines,
    targets=(Target(8.0, 3.0, 0.5, shape="4096x1000", source="issue 1"),),
    overhead=Shape("8x10", (8, 10)),
)
