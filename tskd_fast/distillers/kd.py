"""``kd``: Hinton's knowledge distillation, CE + KD at T = 4.

Default weights are mdistiller's CIFAR ones (CE 0.1, KD 0.9); RepDistiller uses 1 and 1
(``distiller.terms.ce=1 distiller.terms.kd=1``).
"""

import tskd_fast.distillers.terms  # noqa: F401  (registers the ce and kd terms weighed here)
from tskd_fast.distillers.base import Distiller
from tskd_fast.distillers.registry import MethodEntry, register_method

register_method(
    MethodEntry(
        name="kd",
        cls=Distiller,
        terms={"ce": 0.1, "kd": 0.9},
        doc="Hinton's KD (CE + T^2 KL at a fixed temperature)",
    )
)
