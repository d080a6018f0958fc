"""Drop-in modules over tskd_fast.functional."""

from tskd_fast.nn.augment import ALL_OPS, LearnedAugmentation
from tskd_fast.nn.kd_loss import DTDKDLoss, DTDTemperature, KDLoss

__all__ = ["ALL_OPS", "DTDKDLoss", "DTDTemperature", "KDLoss", "LearnedAugmentation"]
