"""Drop-in modules over tskd_fast.functional."""

from tskd_fast.nn.kd_loss import DTDKDLoss, DTDTemperature, KDLoss

__all__ = ["DTDKDLoss", "DTDTemperature", "KDLoss"]
