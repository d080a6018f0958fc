"""``vanilla``: the student alone with the hard-label cross-entropy (trains teachers and baselines)."""

import tskd_fast.distillers.terms  # noqa: F401  (registers the ce terms weighed here)
from tskd_fast.distillers.base import Distiller
from tskd_fast.distillers.registry import MethodEntry, register_method

register_method(
    MethodEntry(
        name="vanilla",
        cls=Distiller,
        terms={"ce": 1.0},
        doc="no distillation: cross-entropy with the labels (train a teacher or a baseline)",
    )
)
