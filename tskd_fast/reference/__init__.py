"""Plain PyTorch implementations: the oracle for the kernel tests and the baseline of the benchmarks."""

from tskd_fast.reference.abf import abf_fuse
from tskd_fast.reference.convlstm import convlstm_gates
from tskd_fast.reference.dtd import dtd_temperature, dtd_weight
from tskd_fast.reference.fused_linear_kd import fused_linear_kd
from tskd_fast.reference.hcl import hcl_loss, hcl_pair
from tskd_fast.reference.kd_loss import kd_loss, kd_target, probability_shift

__all__ = [
    "abf_fuse",
    "convlstm_gates",
    "dtd_temperature",
    "dtd_weight",
    "fused_linear_kd",
    "hcl_loss",
    "hcl_pair",
    "kd_loss",
    "kd_target",
    "probability_shift",
]
