"""Drop-in modules over tskd_fast.functional."""

from tskd_fast.nn.convlstm import ConvLSTM, ConvLSTMCell, permute_gate_blocks
from tskd_fast.nn.kd_loss import DTDKDLoss, DTDTemperature, KDLoss
from tskd_fast.nn.tskd import (
    EncoderForecaster,
    TSKDReview,
    attention_gap,
    attention_map,
    increment_sequence,
    review_loss,
)

__all__ = [
    "ConvLSTM",
    "ConvLSTMCell",
    "DTDKDLoss",
    "DTDTemperature",
    "EncoderForecaster",
    "KDLoss",
    "TSKDReview",
    "attention_gap",
    "attention_map",
    "increment_sequence",
    "permute_gate_blocks",
    "review_loss",
]
