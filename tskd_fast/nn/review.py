"""The whole ReviewKD review stack (ABFs from the deepest student stage to the shallowest) and the
channel/shape presets of the paper's pairs (docs/methods.md §2.3, §2.6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tskd_fast.nn.abf import ABF, spatial_size

Size = int | tuple[int, int]


class ReviewKDFusion(nn.Module):
    """The ABF stack of ReviewKD: one ABF per student level, run deepest first, each fusing its
    level with the residual of the deeper ones (docs/methods.md §2.3).

    Args:
        in_channels: student channels per level, shallow -> deep (the last is the pooled feature).
        out_channels: teacher channels per level, shallow -> deep (same length).
        shapes: optional spatial size of each student level, written deep -> shallow as in the
            official code (first entry 1, the pooled feature); checked against the inputs.
        out_shapes: size of each output, deep -> shallow; defaults to ``shapes`` (official), and
            without either the outputs keep the student sizes. ``forward`` may override it.
        mid_channel: channels of the fused features; default ``min(512, in_channels[-1])``.
        backend: implementation of the fusion op (tskd_fast.functional.abf_fuse).

    ``abfs`` is a ModuleList in deep -> shallow order, as upstream's ``self.abfs``, so the keys
    ``abfs.<i>.*`` of an official ReviewKD state_dict load into this module.

    forward(features, out_shapes=None) -> list of (N, out_channels[i], H_i, W_i), shallow -> deep.
        features: one (N, in_channels[i], h_i, w_i) tensor per level, shallow -> deep; the deepest
        may also be the (N, C) pooled vector.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int],
        shapes: Sequence[Size] | None = None,
        out_shapes: Sequence[Size] | None = None,
        mid_channel: int | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        in_channels, out_channels = list(in_channels), list(out_channels)
        if not in_channels:
            raise ValueError("in_channels is empty: the review stack needs at least one student level")
        if len(out_channels) != len(in_channels):
            raise ValueError(
                f"out_channels has {len(out_channels)} teacher levels but in_channels has {len(in_channels)} "
                "student levels; every student level is compared with one teacher level"
            )
        levels = len(in_channels)
        self.shapes = self._sizes(shapes, "shapes", levels)
        self.out_shapes = (
            self._sizes(out_shapes, "out_shapes", levels) if out_shapes is not None else self.shapes
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.mid_channel = min(512, in_channels[-1]) if mid_channel is None else mid_channel
        self.backend = backend
        built = [
            ABF(c_in, self.mid_channel, c_out, i < levels - 1, backend=backend)
            for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels))
        ]
        self.abfs = nn.ModuleList(built[::-1])

    @staticmethod
    def _sizes(values: Sequence[Size] | None, name: str, levels: int) -> list[tuple[int, int]] | None:
        if values is None:
            return None
        values = list(values)
        if len(values) != levels:
            raise ValueError(
                f"{name} has {len(values)} entries but there are {levels} levels (one size per level)"
            )
        return [spatial_size(v, f"{name}[{i}]") for i, v in enumerate(values)]

    @classmethod
    def from_preset(cls, teacher: str, student: str, *, backend: str = "auto") -> ReviewKDFusion:
        """The official layout of a paper pair (see ``PRESETS``); names as in tskd_fast.models."""
        p = preset(teacher, student)
        return cls(p.in_channels, p.out_channels, p.shapes, p.out_shapes, p.mid_channel, backend=backend)

    @classmethod
    def for_models(
        cls, student: nn.Module, teacher: nn.Module, mid_channel: int | None = None, *, backend: str = "auto"
    ) -> ReviewKDFusion:
        """The stack for any pair of zoo models: stages 1..K plus the pooled feature of each (the stem
        f0 is not used). Spatial sizes are taken from the features at run time."""
        s_channels, t_channels = student.stage_channels()[1:], teacher.stage_channels()[1:]
        if len(s_channels) != len(t_channels):
            raise ValueError(
                f"the student has {len(s_channels)} levels (stages + pooled: {s_channels}) but the teacher has "
                f"{len(t_channels)} ({t_channels}); ReviewKD pairs them level by level"
            )
        return cls(s_channels, t_channels, mid_channel=mid_channel, backend=backend)

    def forward(
        self, features: Sequence[torch.Tensor], out_shapes: Sequence[Size] | None = None
    ) -> list[torch.Tensor]:
        feats = self._check_features(features)
        outs = (
            self.out_shapes if out_shapes is None else self._sizes(out_shapes, "out_shapes", len(self.abfs))
        )
        outs = outs if outs is not None else [None] * len(self.abfs)
        xs = feats[::-1]
        out, residual = self.abfs[0](xs[0], out_shape=outs[0])
        results = [out]
        for j, (x, abf, out_shape) in enumerate(zip(xs[1:], self.abfs[1:], outs[1:]), start=1):
            if residual.shape[-2] > x.shape[-2] or residual.shape[-1] > x.shape[-1]:
                raise ValueError(
                    f"features[{len(xs) - 1 - j}] of size {tuple(x.shape[-2:])} cannot be fused with the residual of "
                    f"the deeper level, of size {tuple(residual.shape[-2:])} (out_shapes[{j - 1}]): the residual "
                    "is upsampled, so it must be at most as large as the next shallower feature"
                )
            out, residual = abf(x, residual, None, out_shape)
            results.insert(0, out)
        return results

    def _check_features(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(features, torch.Tensor):
            raise ValueError(
                "features must be a sequence of tensors, one per student level (shallow -> deep)"
            )
        feats = list(features)
        if len(feats) != len(self.in_channels):
            raise ValueError(
                f"features has {len(feats)} levels but the fusion was built for {len(self.in_channels)} "
                f"(in_channels={self.in_channels}); pass the stage features without the stem, then the pooled one"
            )
        if feats[-1].dim() == 2:
            feats[-1] = feats[-1][:, :, None, None]
        batch = feats[0].shape[0]
        for i, f in enumerate(feats):
            if f.dim() != 4:
                raise ValueError(f"features[{i}] must be (N, C, h, w), got shape {tuple(f.shape)}")
            if f.shape[1] != self.in_channels[i]:
                raise ValueError(
                    f"features[{i}] has {f.shape[1]} channels but in_channels[{i}] = {self.in_channels[i]}"
                )
            if f.shape[0] != batch:
                raise ValueError(f"features[{i}] has batch size {f.shape[0]} but features[0] has {batch}")
            if self.shapes is not None:
                expected = self.shapes[len(feats) - 1 - i]
                if tuple(f.shape[-2:]) != expected:
                    raise ValueError(
                        f"features[{i}] is {tuple(f.shape[-2:])} but shapes[{len(feats) - 1 - i}] = {expected}"
                    )
        return feats

    def extra_repr(self) -> str:
        return f"mid_channel={self.mid_channel}, shapes={self.shapes}, out_shapes={self.out_shapes}"


@dataclass(frozen=True)
class ReviewKDPreset:
    """The official layout and loss weight of one teacher -> student pair.

    Channel lists shallow -> deep; shapes/out_shapes deep -> shallow (official convention) for
    ``input_size`` inputs. hcl_weight is the paper scripts' lambda (None where the scripts give none),
    student_preact whether the student's pre-ReLU features are fused (ImageNet) or its post-ReLU ones.
    """

    in_channels: tuple[int, ...]
    out_channels: tuple[int, ...]
    shapes: tuple[int, ...]
    out_shapes: tuple[int, ...]
    mid_channel: int
    hcl_weight: float | None
    student_preact: bool = False
    input_size: int = 32


def _pair(
    s_in: tuple[int, ...],
    t_out: tuple[int, ...],
    shapes: tuple[int, ...],
    out_shapes: tuple[int, ...] | None = None,
    weight: float | None = None,
    **kw: bool | int,
) -> ReviewKDPreset:
    """A preset with the official mid channel min(512, C_pooled) and out_shapes defaulting to shapes."""
    return ReviewKDPreset(
        tuple(s_in),
        tuple(t_out),
        tuple(shapes),
        tuple(out_shapes or shapes),
        min(512, s_in[-1]),
        weight,
        **kw,
    )


_RES = (16, 32, 64, 64)
_RESX4 = (64, 128, 256, 256)
_WRN2 = (32, 64, 128, 128)
_SHUFFLE_SHAPES, _CIFAR_SHAPES = (1, 4, 8, 16), (1, 8, 16, 32)

# (teacher, student) canonical zoo names -> layout. From ReviewKD's build_review_kd and
# script/reviewKD.sh; the MobileNetV2 and VGG rows (not runnable upstream, no weight in the script)
# were checked against this zoo's feature sizes at 32x32 (MobileNetV2's stem has stride 2, so its
# stages are 16/8/4/2 and the official shapes are right).
PRESETS: dict[tuple[str, str], ReviewKDPreset] = {
    ("resnet32x4", "resnet8x4"): _pair(_RESX4, _RESX4, _CIFAR_SHAPES, weight=5.0),
    ("resnet56", "resnet20"): _pair(_RES, _RES, _CIFAR_SHAPES, weight=0.6),
    ("resnet110", "resnet32"): _pair(_RES, _RES, _CIFAR_SHAPES, weight=1.0),
    ("wrn_40_2", "wrn_16_2"): _pair(_WRN2, _WRN2, _CIFAR_SHAPES, weight=5.0),
    ("wrn_40_2", "wrn_40_1"): _pair(_RES, _WRN2, _CIFAR_SHAPES, weight=5.0),
    ("wrn_40_2", "ShuffleV1"): _pair((240, 480, 960, 960), _WRN2, _SHUFFLE_SHAPES, _CIFAR_SHAPES, weight=5.0),
    ("resnet32x4", "ShuffleV1"): _pair(
        (240, 480, 960, 960), _RESX4, _SHUFFLE_SHAPES, _CIFAR_SHAPES, weight=5.0
    ),
    ("resnet32x4", "ShuffleV2"): _pair(
        (116, 232, 464, 1024), _RESX4, _SHUFFLE_SHAPES, _CIFAR_SHAPES, weight=8.0
    ),
    ("ResNet50", "MobileNetV2"): _pair(
        (12, 16, 48, 160, 1280), (256, 512, 1024, 2048, 2048), (1, 2, 4, 8, 16), (1, 4, 8, 16, 32)
    ),
    ("vgg13", "vgg8"): _pair((128, 256, 512, 512, 512), (128, 256, 512, 512, 512), (1, 4, 4, 8, 16)),
    ("imagenet_resnet34", "imagenet_resnet18"): _pair(
        (64, 128, 256, 512, 512),
        (64, 128, 256, 512, 512),
        (1, 7, 14, 28, 56),
        weight=1.0,
        student_preact=True,
        input_size=224,
    ),
}


def preset(teacher: str, student: str) -> ReviewKDPreset:
    """The preset of a pair (model names or aliases); ValueError listing the known pairs otherwise."""
    from tskd_fast.models import resolve_name

    key = (resolve_name(teacher), resolve_name(student))
    if key not in PRESETS:
        known = ", ".join(f"{t}->{s}" for t, s in PRESETS)
        raise ValueError(
            f"no ReviewKD preset for teacher {key[0]!r} -> student {key[1]!r}; known pairs: {known}"
        )
    return PRESETS[key]


__all__ = ["PRESETS", "ReviewKDFusion", "ReviewKDPreset", "preset"]
