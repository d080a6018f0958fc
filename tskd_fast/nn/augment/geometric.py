"""Geometric ops through ``affine_grid`` / ``grid_sample`` (bilinear, zero fill), differentiable in
their magnitude.

Each op builds the inverse affine map (output pixel -> input pixel, in pixel units relative to the
image centre) exactly as torchvision's ``affine`` / ``rotate`` do, then rescales it to the
normalised coordinates of ``affine_grid(align_corners=False)``; so with bilinear interpolation the
result equals torchvision's (AutoAugment's calls: shear about the top-left corner, translation in
pixels, rotation counter-clockwise in degrees about the centre) up to float rounding.
Inputs: x (B, C, H, W) floating point; magnitudes: 0-dim tensors or floats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _as_tensor(value: Tensor | float, x: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=x.dtype, device=x.device)


def warp(x: Tensor, inverse: Tensor) -> Tensor:
    """Resample x (B, C, H, W) through ``inverse`` (2, 3): rows [a, b, tx], [c, d, ty] mapping an
    output pixel (u, v) to the input pixel (a u + b v + tx, c u + d v + ty), both relative to the
    image centre; bilinear, zeros outside the image."""
    b, c, h, w = x.shape
    # Scaled by Python numbers, not by a tensor made from a list: that would be a host-to-device
    # copy, which a CUDA graph cannot capture.
    (a, b_, tx), (c_, d, ty) = inverse[0].unbind(), inverse[1].unbind()
    theta = torch.stack(
        [torch.stack([a, b_ * (h / w), tx * (2.0 / w)]), torch.stack([c_ * (w / h), d, ty * (2.0 / h)])]
    ).unsqueeze(0)
    # One map for the whole batch: build the grid once (affine_grid's batched matmul is slow on the
    # CPU) and share it across the batch.
    grid = F.affine_grid(theta, [1, c, h, w], align_corners=False).expand(b, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def shear_x(x: Tensor, shear: Tensor | float) -> Tensor:
    """Horizontal shear by ``shear`` (= tan of the shear angle) about the top-left corner:
    torchvision ``affine(shear=[degrees(atan(shear)), 0], center=[0, 0])``."""
    s = _as_tensor(shear, x)
    h = x.shape[2]
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    inverse = torch.stack([torch.stack([one, s, s * (h / 2)]), torch.stack([zero, one, zero])])
    return warp(x, inverse)


def shear_y(x: Tensor, shear: Tensor | float) -> Tensor:
    """Vertical shear by ``shear`` about the top-left corner (torchvision ``shear=[0, degrees(atan)]``)."""
    s = _as_tensor(shear, x)
    w = x.shape[3]
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    inverse = torch.stack([torch.stack([one, zero, zero]), torch.stack([s, one, s * (w / 2)])])
    return warp(x, inverse)


def translate_x(x: Tensor, pixels: Tensor | float) -> Tensor:
    """Shift right by ``pixels`` (fractional shifts interpolate; torchvision ``translate=[pixels, 0]``)."""
    t = _as_tensor(pixels, x)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return warp(x, torch.stack([torch.stack([one, zero, -t]), torch.stack([zero, one, zero])]))


def translate_y(x: Tensor, pixels: Tensor | float) -> Tensor:
    """Shift down by ``pixels`` (torchvision ``translate=[0, pixels]``)."""
    t = _as_tensor(pixels, x)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return warp(x, torch.stack([torch.stack([one, zero, zero]), torch.stack([zero, one, -t])]))


def rotate(x: Tensor, degrees: Tensor | float) -> Tensor:
    """Rotate counter-clockwise by ``degrees`` about the image centre (torchvision ``rotate``)."""
    a = _as_tensor(degrees, x) * (math.pi / 180.0)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return warp(x, torch.stack([torch.stack([cos, -sin, zero]), torch.stack([sin, cos, zero])]))


__all__ = ["rotate", "shear_x", "shear_y", "translate_x", "translate_y", "warp"]
