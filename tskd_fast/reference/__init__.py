"""Plain PyTorch implementations: the oracle for the kernel tests and the baseline of the benchmarks."""

from tskd_fast.reference.convlstm import convlstm_gates
from tskd_fast.reference.dtd import dtd_temperature, dtd_weight
from tskd_fast.reference.kd_loss import kd_loss, kd_target, probability_shift

__all__ = ["convlstm_gates", "dtd_temperature", "dtd_weight", "kd_loss", "kd_target", "probability_shift"]
