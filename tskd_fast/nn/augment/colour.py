"""Colour ops on un-normalised images in [0, 1], differentiable in their magnitude.

Every function takes ``x`` (B, C, H, W) floating point with values in [0, 1] and returns the same
shape and dtype. Factors and thresholds are 0-dim tensors (so gradients reach them) or floats.
Brightness, saturation, contrast and sharpness follow torchvision's float-image formulas exactly
(blend with a degenerate image, clamp to [0, 1]); posterize and solarize have a piecewise
constant dependence on their magnitude, so their forward pass is the exact op and their
magnitude gradient comes from a smooth surrogate (a straight-through estimate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)
# Bandwidth (in [0, 1] pixel units) of the soft threshold behind solarize's magnitude gradient.
SOLARIZE_BANDWIDTH = 0.05


def grayscale(x: Tensor) -> Tensor:
    """x (B, 3, H, W) -> luma (B, 1, H, W), torchvision's weights."""
    r, g, b = x.unbind(1)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(1)


def _blend(x: Tensor, degenerate: Tensor, factor: Tensor | float) -> Tensor:
    # In torchvision's order of operations, so that factor 1 returns x exactly.
    return (x * factor + degenerate * (1.0 - factor)).clamp(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """Brightness: clamp(factor * x); factor 1 is the identity (torchvision adjust_brightness)."""
    return (x * factor).clamp(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """Saturation ("Color"): blend with the grayscale image; needs RGB (B, 3, H, W)."""
    return _blend(x, grayscale(x), factor)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """Contrast: blend with the mean luma of each image; needs RGB (B, 3, H, W)."""
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_sharpness(x: Tensor, factor: Tensor | float) -> Tensor:
    """Sharpness: blend with a 3x3 smoothed image whose one-pixel border is the original
    (torchvision adjust_sharpness; images of height or width <= 2 are returned unchanged)."""
    c, h, w = x.shape[1:]
    if h <= 2 or w <= 2:
        return x
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    blurred = F.conv2d(x, kernel, groups=c)
    # The degenerate image differs from x only inside the border: pad the interior difference.
    degenerate = x + F.pad(blurred - x[:, :, 1:-1, 1:-1], (1, 1, 1, 1))
    return _blend(x, degenerate, factor)


def posterize(x: Tensor, strength: Tensor | float) -> Tensor:
    """Posterize to ``8 - round(4 * strength)`` bits (strength in [0, 1]: 8 bits -> 4 bits).

    Forward: the exact op on the 8-bit values round(255 x) (torchvision posterize of the uint8
    image), and x unchanged at 8 bits. Gradient: straight through for x; for the strength that of
    the mean quantisation error, x - (2^(4 strength) - 1) / 510 (dropping k low bits of uniform
    8-bit values lowers them by (2^k - 1) / 2 on average), since the exact op is piecewise constant.
    """
    strength = torch.as_tensor(strength, dtype=x.dtype, device=x.device)
    step = torch.exp2(torch.round(4.0 * strength.detach()))  # 2^(dropped bits), 1..16
    with torch.no_grad():
        levels = torch.round(x * 255.0)
        hard = torch.where(step == 1.0, x, torch.floor(levels / step) * step / 255.0)
    surrogate = -(torch.exp2(4.0 * strength) - 1.0) / 510.0
    return hard + (x - x.detach()) + (surrogate - surrogate.detach())


def solarize(x: Tensor, strength: Tensor | float) -> Tensor:
    """Solarize: invert the pixels strictly above the threshold ``1 - strength`` (strength in [0, 1]).

    torchvision inverts pixels at or above the threshold; the two differ only on pixels exactly at
    it, and "strictly above" makes strength 0 the identity. Forward: the exact op (its gradient in
    x is +-1). The strength gradient comes from a soft threshold of bandwidth SOLARIZE_BANDWIDTH,
    sigmoid((x - t) / bw) * (1 - 2x): a kernel estimate of how the output moves with the threshold.
    """
    strength = torch.as_tensor(strength, dtype=x.dtype, device=x.device)
    threshold = 1.0 - strength
    hard = torch.where(x > threshold.detach(), 1.0 - x, x)
    xd = x.detach()
    soft = torch.sigmoid((xd - threshold) / SOLARIZE_BANDWIDTH) * (1.0 - 2.0 * xd)
    return hard + (soft - soft.detach())


__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_sharpness",
    "grayscale",
    "posterize",
    "solarize",
]
