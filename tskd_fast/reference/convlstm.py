"""The ConvLSTM gate math after the convolution, in plain PyTorch (docs/methods.md §3.4)."""

from __future__ import annotations

import torch


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def convlstm_gates(
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None,
    w_co: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of tskd_fast.functional.convlstm_gates (same arguments and semantics, no checks).

    gates (B, 4*C_h, H, W) holds the pre-activations a_i, a_f, a_g, a_o in that channel order;
    c_prev (B, C_h, H, W); the optional peepholes are (C_h, H, W) or (1, C_h, H, W):
        i = sigmoid(a_i + w_ci * c_prev), f = sigmoid(a_f + w_cf * c_prev), g = tanh(a_g),
        c = f * c_prev + i * g, o = sigmoid(a_o + w_co * c), h = o * tanh(c).
    Computed in float32 (float64 for float64 inputs), differentiable in every input; returns
    (h, c), each (B, C_h, H, W) in the dtype of gates.
    """
    opmath = _opmath(gates.dtype)
    a_i, a_f, a_g, a_o = gates.to(opmath).chunk(4, dim=1)
    c = c_prev.to(opmath)
    if w_ci is not None:
        a_i = a_i + w_ci.to(opmath) * c
    if w_cf is not None:
        a_f = a_f + w_cf.to(opmath) * c
    c_new = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
    if w_co is not None:
        a_o = a_o + w_co.to(opmath) * c_new
    h = torch.sigmoid(a_o) * torch.tanh(c_new)
    return h.to(gates.dtype), c_new.to(gates.dtype)
