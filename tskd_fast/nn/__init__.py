"""Drop-in modules over tskd_fast.functional."""

from tskd_fast.nn.abf import ABF
from tskd_fast.nn.augment import ALL_OPS, LearnedAugmentation
from tskd_fast.nn.convlstm import ConvLSTM, ConvLSTMCell, permute_gate_blocks
from tskd_fast.nn.dtd import DTDKDLoss, DTDTemperature
from tskd_fast.nn.hcl import HCLLoss
from tskd_fast.nn.kd_loss import KDLoss
from tskd_fast.nn.review import PRESETS, ReviewKDFusion, ReviewKDPreset
from tskd_fast.nn.tskd import (
    EncoderForecaster,
    TSKDReview,
    attention_gap,
    attention_map,
    increment_sequence,
    review_loss,
)

__all__ = [
    "ABF",
    "ALL_OPS",
    "PRESETS",
    "ConvLSTM",
    "ConvLSTMCell",
    "DTDKDLoss",
    "DTDTemperature",
    "EncoderForecaster",
    "HCLLoss",
    "KDLoss",
    "LearnedAugmentation",
    "ReviewKDFusion",
    "ReviewKDPreset",
    "TSKDReview",
    "attention_gap",
    "attention_map",
    "increment_sequence",
    "permute_gate_blocks",
    "review_loss",
]
