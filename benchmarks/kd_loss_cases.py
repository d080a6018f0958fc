"""The KD-loss implementations and shapes the benchmarks compare."""

from __future__ import annotations

import torch
import torch.nn.functional as torch_f

from tskd_fast import functional as F
from tskd_fast import reference

SHAPES = [(128, 100), (1024, 100), (4096, 1000), (1024, 32000)]
TEMPERATURE = 4.0


def distill_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The DistillKL module practitioners copy from RepDistiller / ReviewKD (T^2 KL, batchmean)."""
    t = TEMPERATURE
    return torch_f.kl_div(
        torch_f.log_softmax(student / t, dim=1), torch_f.softmax(teacher / t, dim=1), reduction="batchmean"
    ) * (t * t)


def reference_kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return reference.kd_loss(student, teacher, temperature=TEMPERATURE)


def fused(backend: str):
    def loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.kd_loss(student, teacher, temperature=TEMPERATURE, backend=backend)

    return loss


def dtd_ka_reference(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    tau = reference.dtd_temperature(student, teacher, t0=TEMPERATURE, target=target, ka="ps")
    return reference.kd_loss(student, teacher, target, tau, ka="ps", ce_weight=1.0)


def dtd_ka_fused(backend: str):
    def loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tau = F.dtd_temperature(student, teacher, t0=TEMPERATURE, target=target, ka="ps", backend=backend)
        return F.kd_loss(student, teacher, target, tau, ka="ps", ce_weight=1.0, backend=backend)

    return loss


def dtd_ka_implementations(device: str, with_compile: bool = True) -> dict:
    """DTD temperatures (flsw) + probability shift + KL + CE: name -> loss(student, teacher, target)."""
    # The fused op first: nothing compiled yet can leave work running while it is timed.
    impls = {"fused": dtd_ka_fused("cpu" if device == "cpu" else "auto"), "eager reference": dtd_ka_reference}
    if with_compile:
        impls["compile reference"] = torch.compile(dtd_ka_reference, dynamic=False)
    return impls


def implementations(device: str, with_compile: bool = True) -> dict:
    """name -> loss(student, teacher); forward + backward is what gets timed."""
    # The fused op first: nothing compiled yet can leave work running while it is timed.
    impls = {
        "fused": fused("cpu" if device == "cpu" else "auto"),
        "eager reference": reference_kd,
        "eager DistillKL": distill_kl,
    }
    if with_compile:
        impls["compile reference"] = torch.compile(reference_kd, dynamic=False)
        impls["compile DistillKL"] = torch.compile(distill_kl, dynamic=False)
    return impls


def forward_backward(loss_fn, student: torch.Tensor, teacher: torch.Tensor, reset_grad: bool = True, *extra):
    """One forward + backward; reset_grad=False leaves freeing the last gradient to the caller
    (peak-memory measurement, which must not count that free). `extra` follows the logits."""

    def run():
        if reset_grad:
            student.grad = None
        loss_fn(student, teacher, *extra).backward()

    return run


def make_inputs(rows: int, classes: int, device: str, dtype=torch.float32):
    """Student logits (requiring grad), teacher logits and labels, seeded by the shape."""
    gen = torch.Generator().manual_seed(rows * 100003 + classes)
    student = (
        torch.randn(rows, classes, generator=gen).mul_(3).to(device=device, dtype=dtype).requires_grad_(True)
    )
    teacher = torch.randn(rows, classes, generator=gen).mul_(3).to(device=device, dtype=dtype)
    target = torch.randint(0, classes, (rows,), generator=gen).to(device)
    return student, teacher, target
