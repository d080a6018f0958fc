"""ReviewKD's attention-based fusion module (ABF), a drop-in for the official one.

Same constructor ``(in_channel, mid_channel, out_channel, fuse)``, submodule and parameter names
(``conv1.0``, ``conv1.1``, ``conv2.0``, ``conv2.1``, ``att_conv.0``), initialisation and
``forward(x, y=None, shape=None, out_shape=None) -> (out, residual)`` as the ABF of
dvlab-research/ReviewKD and mdistiller, so their checkpoints load and code calling them runs
unchanged (docs/methods.md §2.1). The fusion step (nearest upsampling of the residual, the 2-channel
attention, sigmoid, weighted sum) is the fused ``tskd_fast.functional.abf_fuse`` op, which never
materialises the upsampled residual or the concatenation; the convolutions and BatchNorms stay
PyTorch's.
"""

from __future__ import annotations

import torch
from torch import nn

from tskd_fast import functional as F


def spatial_size(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """An ``int`` (square, as in the official code) or an ``(h, w)`` pair -> (h, w) of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = (value, value)
    elif isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        size = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or an (h, w) pair of ints, got {value!r}")
    if min(size) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return size


class ABF(nn.Module):
    """Attention-based fusion of one student stage with the residual of the deeper stages.

    Args:
        in_channel: channels of the student feature ``x``.
        mid_channel: channels of the fused feature (and of the residual ``y``).
        out_channel: channels of the output, i.e. of the teacher feature it is compared with.
        fuse: whether this stage fuses a residual (every stage but the deepest).
        backend: implementation of the fusion op (see tskd_fast.functional); keyword only.

    forward(x (N, in_channel, h, w), y (N, mid_channel, h', w') or None, shape, out_shape)
        -> (out (N, out_channel, H, W), residual (N, mid_channel, H, W)), where (H, W) is
        ``out_shape`` when given and (h, w) otherwise. ``y`` is upsampled (nearest) to (h, w);
        ``shape``, the official code's target size of that upsampling, must equal (h, w) if given.
        ``shape``/``out_shape`` are ints (square) or (h, w) pairs. The residual is taken after the
        ``out_shape`` resize, as in the reference.
    """

    def __init__(
        self, in_channel: int, mid_channel: int, out_channel: int, fuse: bool, *, backend: str = "auto"
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channel", in_channel),
            ("mid_channel", mid_channel),
            ("out_channel", out_channel),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_channel, self.mid_channel, self.out_channel = in_channel, mid_channel, out_channel
        self.backend = backend
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channel),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channel, out_channel, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channel),
        )
        # A Sequential with the Sigmoid, as upstream, so the state_dict keys are att_conv.0.*; the
        # forward reads the conv's weight and bias and runs the fused op instead of calling it.
        self.att_conv = (
            nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        )
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    @property
    def fuse(self) -> bool:
        return self.att_conv is not None

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        shape: int | tuple[int, int] | None = None,
        out_shape: int | tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channel:
            raise ValueError(f"x must be (N, in_channel={self.in_channel}, h, w), got shape {tuple(x.shape)}")
        x = self.conv1(x)
        if self.att_conv is not None:
            self._check_residual(x, y, shape)
            x = F.abf_fuse(x, y, self.att_conv[0].weight, self.att_conv[0].bias, backend=self.backend)
        if out_shape is not None:
            size = spatial_size(out_shape, "out_shape")
            if tuple(x.shape[-2:]) != size:
                x = nn.functional.interpolate(x, size=size, mode="nearest")
        return self.conv2(x), x

    def _check_residual(self, x: torch.Tensor, y: torch.Tensor | None, shape: object) -> None:
        if y is None:
            raise ValueError(
                "y: this ABF was built with fuse=True and needs the residual of the deeper stage"
            )
        if y.dim() != 4 or y.shape[1] != self.mid_channel:
            raise ValueError(
                f"y must be (N, mid_channel={self.mid_channel}, h', w'), got shape {tuple(y.shape)}"
            )
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has batch size {y.shape[0]} but x has {x.shape[0]}")
        if shape is not None and spatial_size(shape, "shape") != tuple(x.shape[-2:]):
            raise ValueError(
                f"shape={shape!r} must be x's spatial size {tuple(x.shape[-2:])}: the residual is upsampled "
                "to the size of x and fused with it"
            )

    def extra_repr(self) -> str:
        return f"fuse={self.fuse}, backend={self.backend!r}"


__all__ = ["ABF", "spatial_size"]
