"""DTD temperatures (flsw) + probability-shift KA + KL + CE: two fused ops against plain PyTorch."""

from __future__ import annotations

import torch

from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.bench.cases import Family, Inputs, Shape, element_size, generator, randn

T0 = 4.0


def reference_dtd_ka(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    tau = reference.dtd_temperature(student, teacher, t0=T0, target=target, ka="ps")
    return reference.kd_loss(student, teacher, target, tau, ka="ps", ce_weight=1.0)


def fused(backend: str):
    def loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tau = F.dtd_temperature(student, teacher, t0=T0, target=target, ka="ps", backend=backend)
        return F.kd_loss(student, teacher, target, tau, ka="ps", ce_weight=1.0, backend=backend)

    return loss


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> Inputs:
    rows, classes = shape.dims
    gen = generator(rows, classes, 7)
    student = randn((rows, classes), gen, device, dtype, scale=3.0, grad=True)
    teacher = randn((rows, classes), gen, device, dtype, scale=3.0)
    target = torch.randint(0, classes, (rows,), generator=gen).to(device)
    return Inputs(args=(student, teacher, target), grads=None, leaves=(student,))


def minimal_bytes(shape: Shape, dtype: torch.dtype) -> int:
    rows, classes = shape.dims
    return 3 * rows * classes * element_size(dtype) + 8 * rows


FAMILY = Family(
    name="dtd",
    title="DTD temperatures (flsw) + probability shift + KL + CE",
    functional="dtd_temperature",
    shapes=(
        Shape("128x100", (128, 100)),
        Shape("1024x100", (1024, 100)),
        Shape("4096x1000", (4096, 1000), quick=True),
        Shape("1024x32000", (1024, 32000)),
        # An LLM vocabulary (Llama 3), distilled in bf16: on CUDA only (3 GiB of bf16 logits).
        Shape("4096x128256", (4096, 128256), quick=True, device="cuda", dtype="bfloat16"),
    ),
    make_inputs=make_inputs,
    reference=reference_dtd_ka,
    fused=fused,
    minimal_bytes=minimal_bytes,
    bytes_doc="read student and teacher logits (and the int64 labels), write the student gradient: "
    "3·B·C elements + 8·B bytes (the DTD weights pass reads the logits a second time; the model "
    "counts them once)",
    overhead=Shape("8x10", (8, 10)),
)
