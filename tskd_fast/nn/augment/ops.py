"""The op table of LearnedAugmentation: each op's family, magnitude range and sign convention.

Magnitude ranges are AutoAugment's (as in the TST reference): shear up to 0.3, translation up to
150/331 of the image side, rotation up to 30 degrees, brightness / saturation / contrast /
sharpness factors 1 +- 0.9, posterize 8 -> 4 bits, solarize threshold 1 -> 0. A learned magnitude
m in (0, 1) is the fraction of the range; signed ops get a random sign per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from tskd_fast.nn.augment import colour, geometric

MAX_SHEAR = 0.3
MAX_TRANSLATE = 150.0 / 331.0  # of the image side
MAX_ROTATE = 30.0  # degrees
MAX_FACTOR_DELTA = 0.9


@dataclass(frozen=True)
class OpSpec:
    """family: "colour" | "geometric" (learned magnitude) or "fixed" (probability only).

    apply(x in [0, 1], value, height, width) -> augmented x, where value = sign * m * (range) is
    in the op's own units; needs_rgb: the op needs 3-channel images.
    """

    name: str
    family: str
    signed: bool = False
    needs_rgb: bool = False
    apply: Callable[[Tensor, Tensor, int, int], Tensor] | None = None


def _factor(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor, int, int], Tensor]:
    return lambda x, m, h, w: fn(x, 1.0 + MAX_FACTOR_DELTA * m)


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec("brightness", "colour", True, False, _factor(colour.adjust_brightness)),
        OpSpec("saturation", "colour", True, True, _factor(colour.adjust_saturation)),
        OpSpec("contrast", "colour", True, True, _factor(colour.adjust_contrast)),
        OpSpec("sharpness", "colour", True, False, _factor(colour.adjust_sharpness)),
        OpSpec("posterize", "colour", False, False, lambda x, m, h, w: colour.posterize(x, m)),
        OpSpec("solarize", "colour", False, False, lambda x, m, h, w: colour.solarize(x, m)),
        OpSpec("shear_x", "geometric", True, False, lambda x, m, h, w: geometric.shear_x(x, MAX_SHEAR * m)),
        OpSpec("shear_y", "geometric", True, False, lambda x, m, h, w: geometric.shear_y(x, MAX_SHEAR * m)),
        OpSpec(
            "translate_x",
            "geometric",
            True,
            False,
            lambda x, m, h, w: geometric.translate_x(x, MAX_TRANSLATE * w * m),
        ),
        OpSpec(
            "translate_y",
            "geometric",
            True,
            False,
            lambda x, m, h, w: geometric.translate_y(x, MAX_TRANSLATE * h * m),
        ),
        OpSpec("rotate", "geometric", True, False, lambda x, m, h, w: geometric.rotate(x, MAX_ROTATE * m)),
        OpSpec("equalize", "fixed"),
        OpSpec("invert", "fixed"),
        OpSpec("cutout", "fixed"),
    )
}
ALL_OPS: tuple[str, ...] = tuple(OPS)


__all__ = ["ALL_OPS", "MAX_FACTOR_DELTA", "MAX_ROTATE", "MAX_SHEAR", "MAX_TRANSLATE", "OPS", "OpSpec"]
