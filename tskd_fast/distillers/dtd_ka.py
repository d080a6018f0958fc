"""``dtd_ka``: KD with dynamic temperatures (DTD) and knowledge adjustment (KA), "Preparing Lessons".

The loss is the fused KD kernel with per-sample temperatures tau_n = T0 + beta (mean(w) - w_n)
and the teacher target corrected where the teacher is wrong (probability shift by default). The
paper's CIFAR values of T0, beta, gamma are unknown; the defaults (4, 1, 2) and the weights
(CE 0.1, DTD+KA 0.9, as for ``kd``) are configurable under ``distiller.dtd_ka`` / ``distiller.terms``.
"""

import tskd_fast.distillers.terms  # noqa: F401  (registers the ce and dtd_ka terms weighed here)
from tskd_fast.distillers.base import Distiller
from tskd_fast.distillers.registry import MethodEntry, register_method

register_method(
    MethodEntry(
        name="dtd_ka",
        cls=Distiller,
        terms={"ce": 0.1, "dtd_ka": 0.9},
        doc="KD with dynamic per-sample temperatures (DTD) and knowledge adjustment (KA)",
    )
)
