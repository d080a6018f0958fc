"""The fixed ops (no magnitude): equalize, invert and cutout, on un-normalised images in [0, 1].

x is (B, C, H, W) floating point; outputs have its shape and dtype. They carry no magnitude, so the
module learns only how often to apply them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def invert(x: Tensor) -> Tensor:
    """1 - x (torchvision invert of a float image)."""
    return 1.0 - x


def equalize(x: Tensor) -> Tensor:
    """Histogram equalisation of each channel of each image on its 8-bit values round(255 x), as
    torchvision (and PIL) equalize uint8 images; not differentiable (returned without gradient)."""
    with torch.no_grad():
        b, c, h, w = x.shape
        v = torch.round(x.clamp(0.0, 1.0) * 255.0).long().reshape(b * c, h * w)
        hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device)
        hist.scatter_add_(1, v, torch.ones_like(v))
        cum = hist.cumsum(1)
        # PIL's scheme: the step leaves out the pixels of the highest occupied level.
        top = hist.gather(1, cum.argmax(1, keepdim=True))
        step = torch.div(h * w - top, 255, rounding_mode="floor")
        lut = torch.div(cum[:, :-1] + step // 2, step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
        lut = torch.cat([torch.zeros_like(lut[:, :1]), lut], 1)
        out = torch.where(step > 0, lut.gather(1, v), v)
        return (out.to(x.dtype) / 255.0).view(b, c, h, w)


def cutout(x: Tensor, top: int, left: int, size: int, fill: Tensor) -> Tensor:
    """Fill the window of side ``size`` centred on pixel (top, left), clipped at the image edges,
    with ``fill`` (C,) in every image of the batch (the reference's Cutout: the same window for
    the whole batch; rows top - size // 2 to top + size // 2, exclusive)."""
    h, w = x.shape[2:]
    r0, r1 = max(0, top - size // 2), min(h, top + size // 2)
    c0, c1 = max(0, left - size // 2), min(w, left + size // 2)
    mask = torch.zeros(1, 1, h, w, dtype=torch.bool, device=x.device)
    mask[:, :, r0:r1, c0:c1] = True
    return torch.where(mask, fill.to(x.dtype).view(1, -1, 1, 1), x)


def cutout_at(x: Tensor, centre: Tensor, size: int, fill: Tensor) -> Tensor:
    """``cutout`` with the centre given as a (2,) tensor of fractions of (H, W) on x's device: the
    window's pixel (floor(centre[0] * H), floor(centre[1] * W)) and its edges are computed on the
    device, so the call reads nothing on the host (traceable by torch.compile, capturable in a
    CUDA graph) and gives ``cutout``'s window for the same centre."""
    h, w = x.shape[2:]

    def inside(fraction: Tensor, side: int) -> Tensor:
        # float64: a float32 fraction times the side is exact there, so the floor is int(c * side).
        pixel = torch.floor(fraction.to(torch.float64) * side)
        start, stop = (pixel - size // 2).clamp_min(0), (pixel + size // 2).clamp_max(side)
        index = torch.arange(side, device=x.device, dtype=torch.float64)
        return (index >= start) & (index < stop)

    mask = (inside(centre[0], h)[:, None] & inside(centre[1], w)[None, :]).view(1, 1, h, w)
    return torch.where(mask, fill.to(x.dtype).view(1, -1, 1, 1), x)


__all__ = ["cutout", "cutout_at", "equalize", "invert"]
