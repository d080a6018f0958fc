"""Drop-in modules over tskd_fast.functional."""

from tskd_fast.nn.abf import ABF
from tskd_fast.nn.hcl import HCLLoss
from tskd_fast.nn.kd_loss import DTDKDLoss, DTDTemperature, KDLoss
from tskd_fast.nn.review import PRESETS, ReviewKDFusion, ReviewKDPreset

__all__ = [
    "ABF",
    "PRESETS",
    "DTDKDLoss",
    "DTDTemperature",
    "HCLLoss",
    "KDLoss",
    "ReviewKDFusion",
    "ReviewKDPreset",
]
