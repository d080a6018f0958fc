"""ReviewKD's attention-based fusion: nearest upsampling of the residual, 2-channel attention, sum."""

from __future__ import annotations

import torch

from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.bench.cases import Family, Inputs, Shape, Target, element_size, generator, randn


def reference_abf(x: torch.Tensor, y: torch.Tensor, att_weight: torch.Tensor, att_bias: torch.Tensor):
    return reference.abf_fuse(x, y, att_weight, att_bias)


def fused(backend: str):
    def abf(x: torch.Tensor, y: torch.Tensor, att_weight: torch.Tensor, att_bias: torch.Tensor):
        return F.abf_fuse(x, y, att_weight, att_bias, backend=backend)

    return abf


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> Inputs:
    batch, mid, side, residual_side = shape.dims
    gen = generator(batch, mid, side, residual_side)
    x = randn((batch, mid, side, side), gen, device, dtype, grad=True)
    y = randn((batch, mid, residual_side, residual_side), gen, device, dtype, grad=True)
    # The scale of a default-initialised 1x1 conv over 2M channels.
    att_weight = randn((2, 2 * mid, 1, 1), gen, device, dtype, scale=(2 * mid) ** -0.5, grad=True)
    att_bias = randn((2,), gen, device, dtype, scale=0.1, grad=True)
    grad = randn((batch, mid, side, side), gen, device, dtype)
    return Inputs(args=(x, y, att_weight, att_bias), grads=(grad,), leaves=(x, y, att_weight, att_bias))


def minimal_bytes(shape: Shape, dtype: torch.dtype) -> int:
    batch, mid, side, residual_side = shape.dims
    nx = batch * mid * side * side
    ny = batch * mid * residual_side * residual_side
    forward = nx + ny + nx  # read x, y; write fused
    backward = nx + nx + ny + nx + ny  # read grad_fused, x, y; write dx, dy
    return (forward + backward) * element_size(dtype)


def _shape(batch: int, mid: int, side: int, residual: int, quick: bool = False) -> Shape:
    return Shape(f"{batch}x{mid}x{side}x{side}<-{residual}x{residual}", (batch, mid, side, residual), quick)


FAMILY = Family(
    name="abf",
    title="ABF fusion (upsample residual, attention, weighted sum)",
    functional="abf_fuse",
    shapes=(
        # CIFAR resnet32x4 -> resnet8x4 (mid 256) and resnet56 -> resnet20 (mid 64), batch 64.
        _shape(64, 256, 8, 1),
        _shape(64, 256, 16, 8, quick=True),
        _shape(64, 256, 32, 16),
        _shape(64, 64, 32, 16),
        # ImageNet R34 -> R18 (mid 512), batch 32.
        _shape(32, 512, 7, 1),
        _shape(32, 512, 14, 7),
        _shape(32, 512, 28, 14),
        _shape(32, 512, 56, 28),
    ),
    make_inputs=make_inputs,
    reference=reference_abf,
    fused=fused,
    minimal_bytes=minimal_bytes,
    bytes_doc="forward reads x and y, writes fused; backward reads grad_fused, x and y, writes dx and "
    "dy: 5·nx + 3·ny elements (nx = N·M·h·w, ny = N·M·h'·w'; the 2×2M attention weights are "
    "negligible and not counted)",
    targets=(Target(3.0, 1.5, source="issue 8"),),
    overhead=_shape(2, 4, 4, 2),
)
