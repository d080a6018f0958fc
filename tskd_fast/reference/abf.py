"""ReviewKD's attention-based fusion (ABF) of a feature with the upsampled residual, in plain
PyTorch (docs/methods.md §2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def abf_fuse(
    x: torch.Tensor, y: torch.Tensor, att_weight: torch.Tensor, att_bias: torch.Tensor
) -> torch.Tensor:
    """fused = x * z0 + y_up * z1 with z = sigmoid(conv1x1(cat[x, y_up])) (N, 2, h, w).

    Args:
        x: (N, M, h, w) the projected student feature x'.
        y: (N, M, h', w') the residual from the deeper stage; y_up is its nearest upsampling to
            (h, w) with PyTorch's rule src = floor(dst * in / out) (F.interpolate(mode="nearest")).
        att_weight: (2, 2M, 1, 1) or (2, 2M): the 1x1 attention conv over [x; y_up].
        att_bias: (2,).

    Returns:
        (N, M, h, w) in x's dtype. Computed by PyTorch's own ops at the inputs' precision (the
        weights are cast to x's dtype), as the ReviewKD module does.
    """
    y_up = F.interpolate(y, size=tuple(x.shape[-2:]), mode="nearest")
    weight = att_weight.reshape(2, -1, 1, 1).to(x.dtype)
    z = torch.sigmoid(F.conv2d(torch.cat([x, y_up], dim=1), weight, att_bias.to(x.dtype)))
    return x * z[:, 0:1] + y_up * z[:, 1:2]
