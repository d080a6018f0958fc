"""ReviewKD's hierarchical context loss over every stage pair of a teacher -> student pair."""

from __future__ import annotations

import torch

from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.bench.cases import Family, Inputs, Shape, Target, element_size, generator, randn

LEVELS = (4, 2, 1)


def reference_hcl(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    return reference.hcl_loss(student_feats, teacher_feats, levels=LEVELS)


def fused(backend: str):
    def hcl(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
        return F.hcl_loss(student_feats, teacher_feats, levels=LEVELS, backend=backend)

    return hcl


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> Inputs:
    gen = generator(*(d for dims in shape.dims for d in dims))
    student = [randn(dims, gen, device, dtype, grad=True) for dims in shape.dims]
    teacher = [randn(dims, gen, device, dtype) for dims in shape.dims]
    return Inputs(args=(student, teacher), grads=None, leaves=tuple(student))


def minimal_bytes(shape: Shape, dtype: torch.dtype) -> int:
    elements = sum(n * c * h * w for n, c, h, w in shape.dims)
    return 3 * elements * element_size(dtype)  # read fs and ft, write d(fs)


FAMILY = Family(
    name="hcl",
    title="HCL, levels (4, 2, 1), every stage pair",
    functional="hcl_loss",
    shapes=(
        Shape(
            "r32x4->r8x4 B64",
            ((64, 64, 32, 32), (64, 128, 16, 16), (64, 256, 8, 8), (64, 256, 1, 1)),
            quick=True,
        ),
        Shape(
            "R34->R18 B32",
            ((32, 64, 56, 56), (32, 128, 28, 28), (32, 256, 14, 14), (32, 512, 7, 7), (32, 512, 1, 1)),
        ),
    ),
    make_inputs=make_inputs,
    reference=reference_hcl,
    fused=fused,
    minimal_bytes=minimal_bytes,
    bytes_doc="read every student and teacher feature map once, write the student gradient: "
    "3·Σ N·C·H·W elements over the stage pairs",
    targets=(Target(6.0, 3.0, 0.6, source="issue 8"),),
    overhead=Shape("4 pairs B2", ((2, 4, 8, 8), (2, 4, 4, 4), (2, 4, 2, 2), (2, 4, 1, 1))),
)
