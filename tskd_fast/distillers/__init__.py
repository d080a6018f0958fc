"""Distillation methods behind one registry (``distiller.name`` in the config).

Built in: ``vanilla`` (CE only: teachers and baselines), ``kd`` (Hinton), ``dtd_ka`` (dynamic
temperatures + knowledge adjustment), ``tskd`` (KD + a ConvLSTM review of the student's own
history), ``reviewkd`` (ABF review stack + HCL), ``tst`` (KD on learned-augmented batches with
augmentation search phases). A method is a ``Distiller`` class (see ``base``) plus a
``register_method`` entry with its default loss-term weights; ``registry`` builds it. Combining
methods is a matter of setting weights in ``distiller.terms`` (e.g. ``distiller.terms.dtd_ka=0.5``
next to ``kd``).
"""

from tskd_fast.distillers import dtd_ka, kd, reviewkd, terms, tskd, tst, vanilla  # noqa: F401  (registration)
from tskd_fast.distillers.base import (
    Distiller,
    DistillerSetupError,
    LossTerm,
    RunInfo,
    StepClock,
    StepOutputs,
    unwrap,
)
from tskd_fast.distillers.registry import (
    MethodEntry,
    TermEntry,
    build_from_config,
    build_method,
    build_term,
    get_method,
    methods,
    register_method,
    register_term,
)

__all__ = [
    "Distiller",
    "DistillerSetupError",
    "LossTerm",
    "MethodEntry",
    "RunInfo",
    "StepClock",
    "StepOutputs",
    "TermEntry",
    "build_from_config",
    "build_method",
    "build_term",
    "get_method",
    "methods",
    "register_method",
    "register_term",
    "unwrap",
]
