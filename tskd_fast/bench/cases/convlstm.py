"""The ConvLSTM gate math after the convolution (sigmoid/tanh gates, new cell and hidden state)."""

from __future__ import annotations

import torch

from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.bench.cases import Family, Inputs, Shape, Target, element_size, generator, randn


def reference_gates(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return reference.convlstm_gates(gates, c_prev)


def fused(backend: str):
    def gate_op(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.convlstm_gates(gates, c_prev, backend=backend)

    return gate_op


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> Inputs:
    batch, hidden, height, width = shape.dims
    gen = generator(batch, hidden, height, width)
    gates = randn((batch, 4 * hidden, height, width), gen, device, dtype, scale=2.0, grad=True)
    c_prev = randn((batch, hidden, height, width), gen, device, dtype, grad=True)
    dh = randn((batch, hidden, height, width), gen, device, dtype)
    dc = randn((batch, hidden, height, width), gen, device, dtype)
    return Inputs(args=(gates, c_prev), grads=(dh, dc), leaves=(gates, c_prev))


def minimal_bytes(shape: Shape, dtype: torch.dtype) -> int:
    batch, hidden, height, width = shape.dims
    n = batch * hidden * height * width
    forward = (4 + 1) * n + (1 + 1) * n  # read gates, c_prev; write h, c
    backward = (1 + 1 + 4 + 1) * n + (4 + 1) * n  # read dh, dc, gates, c_prev; write dgates, dc_prev
    return (forward + backward) * element_size(dtype)


def _shape(batch: int, hidden: int, side: int, quick: bool = False) -> Shape:
    return Shape(f"{batch}x{hidden}x{side}x{side}", (batch, hidden, side, side), quick)


FAMILY = Family(
    name="convlstm",
    title="ConvLSTM gates (no peepholes)",
    functional="convlstm_gates",
    shapes=tuple(
        _shape(64, hidden, side, quick=(hidden, side) == (64, 32))
        for hidden in (32, 64, 128)
        for side in (8, 16, 32)
    ),
    make_inputs=make_inputs,
    reference=reference_gates,
    fused=fused,
    minimal_bytes=minimal_bytes,
    bytes_doc="forward reads gates (4n) and c_prev (n), writes h and c (2n); backward reads dh, dc, "
    "gates and c_prev (7n), writes dgates and dc_prev (5n): 19n elements, n = B·C_h·H·W",
    targets=(Target(3.0, 1.5, 0.7, shape="64x64x32x32", source="issue 7"),),
    overhead=_shape(2, 4, 4),
)
