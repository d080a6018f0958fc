"""TST's learned data augmentation: differentiable image ops and the LearnedAugmentation module.

* ``colour``: brightness, saturation, contrast, sharpness; posterize and solarize with
  straight-through magnitude gradients.
* ``geometric``: shear x/y, translate x/y, rotate through ``affine_grid`` / ``grid_sample``.
* ``fixed``: equalize, invert, cutout (no magnitude).
* ``ops``: the op table (families, ranges, signs); ``module``: LearnedAugmentation.
"""

from tskd_fast.nn.augment.module import (
    APPLY_LOGITS,
    CIFAR100_MEAN,
    CIFAR100_STD,
    AugmentationDraw,
    LearnedAugmentation,
)
from tskd_fast.nn.augment.ops import ALL_OPS, OPS, OpSpec

__all__ = [
    "APPLY_LOGITS",
    "ALL_OPS",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "OPS",
    "AugmentationDraw",
    "LearnedAugmentation",
    "OpSpec",
]
