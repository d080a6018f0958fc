"""The tables of distillation methods and of the loss terms they combine, and how both are built.

A *term* is one weighted loss (``ce``, ``kd``, ``dtd_ka``, ``hcl``, ...) with its options section
``distiller.<term>`` in the config. A *method* is a Distiller class plus its default term weights
and, optionally, its own options section ``distiller.<method>``. Adding a method is one
``register_method`` call next to its class and one YAML config.

Everything that builds a distiller goes through here (``build_method``, ``build_from_config``):
the options are merged over the method's and terms' defaults and checked against their schema,
and a method that distils from a teacher is refused without one, before any constructor runs. The
engine's config reads the ``distiller`` section's schema and the teacher rule from here too
(``config_section``, ``needs_teacher``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tskd_fast.distillers.base import Distiller, DistillerSetupError, LossTerm
from tskd_fast.errors import ConfigError
from tskd_fast.schema import Field, Section, resolve


@dataclass(frozen=True)
class TermEntry:
    """A loss term: its class (built from the options section) and that section's schema."""

    name: str
    cls: type[LossTerm]
    options: Section = field(default_factory=dict)
    doc: str = ""


@dataclass(frozen=True)
class MethodEntry:
    """A distillation method.

    terms: default weight of each term (terms not listed default to 0, i.e. off).
    needs_teacher: the method needs a teacher even if every teacher-based term is switched off
        (e.g. feature distillation in the distiller class itself).
    options: schema of ``distiller.<name>`` (method-specific settings), empty if none.
    """

    name: str
    cls: type[Distiller]
    terms: Mapping[str, float]
    needs_teacher: bool = False
    options: Section = field(default_factory=dict)
    doc: str = ""


_TERMS: dict[str, TermEntry] = {}
_METHODS: dict[str, MethodEntry] = {}


def register_term(entry: TermEntry) -> TermEntry:
    """Add a loss term; its name becomes a key of ``distiller.terms`` and of ``distiller``."""
    if entry.name in _TERMS or entry.name in ("name", "terms"):
        raise ValueError(f"loss term {entry.name!r} is already registered or reserved")
    _TERMS[entry.name] = entry
    return entry


def register_method(entry: MethodEntry) -> MethodEntry:
    """Add a distillation method, selectable as ``distiller.name``."""
    if entry.name in _METHODS:
        raise ValueError(f"method {entry.name!r} is already registered")
    unknown = [t for t in entry.terms if t not in _TERMS]
    if unknown:
        raise ValueError(f"method {entry.name!r} uses unregistered terms {unknown}")
    if entry.options and entry.name in _TERMS:
        raise ValueError(f"method {entry.name!r} has options but its name is taken by a loss term")
    _METHODS[entry.name] = entry
    return entry


def terms() -> dict[str, TermEntry]:
    """All registered loss terms, in registration order."""
    return dict(_TERMS)


def methods() -> dict[str, MethodEntry]:
    """All registered methods, in registration order."""
    return dict(_METHODS)


def get_method(name: str) -> MethodEntry:
    """The method called ``name``; ValueError listing the valid names otherwise."""
    if name not in _METHODS:
        raise ValueError(f"unknown distillation method {name!r}; valid methods: {', '.join(_METHODS)}")
    return _METHODS[name]


def _get_term(name: str) -> TermEntry:
    if name not in _TERMS:
        raise ValueError(f"unknown loss term {name!r}; valid terms: {', '.join(_TERMS)}")
    return _TERMS[name]


# -- the config's view ---------------------------------------------------------------------------
def config_section(method_name: str) -> Section:
    """Schema of the ``distiller`` keys besides ``name`` for this method: the weight of every
    term (the method's default weights, 0 for the others), every term's options section and the
    method's own options section."""
    method = get_method(method_name)
    section: Section = {
        "terms": {
            name: Field(float(method.terms.get(name, 0.0)), float, entry.doc)
            for name, entry in _TERMS.items()
        }
    }
    for name, entry in _TERMS.items():
        if entry.options:
            section[name] = entry.options
    if method.options:
        section[method_name] = method.options
    return section


def needs_teacher(method_name: str, weights: Mapping[str, float]) -> bool:
    """Whether the method with these term weights distils from a teacher (the method says so, or a
    term with a non-zero weight reads the teacher's logits or features)."""
    method = get_method(method_name)
    return method.needs_teacher or any(
        w and (_get_term(k).cls.needs_teacher or _get_term(k).cls.needs_teacher_features)
        for k, w in weights.items()
    )


# -- building ------------------------------------------------------------------------------------
def resolve_options(section: Section, options: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    """``options`` merged over the section's defaults and checked (DistillerSetupError naming the
    dotted key ``path.key``); an already resolved section comes back equal."""
    try:
        return resolve(section, dict(options or {}), path)
    except ConfigError as exc:
        raise DistillerSetupError(str(exc)) from None


def build_term(name: str, options: Mapping[str, Any] | None = None) -> LossTerm:
    """The registered term ``name`` built from its options (merged over its defaults)."""
    entry = _get_term(name)
    return entry.cls(**resolve_options(entry.options, options, f"distiller.{name}"))


def build_method(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None,
    built_terms: Mapping[str, tuple[float, LossTerm]],
    options: Mapping[str, Any] | None = None,
) -> Distiller:
    """The method ``name`` over ``student`` and the frozen ``teacher``, with ``built_terms``
    (name -> (weight, LossTerm)) and its options section merged over the defaults.

    Raises DistillerSetupError (a ValueError) for unknown or invalid options and for a method that
    distils from a teacher given none.
    """
    entry = get_method(name)
    merged = resolve_options(entry.options, options, f"distiller.{name}")
    uses_teacher = entry.needs_teacher or any(
        t.needs_teacher or t.needs_teacher_features for _, t in built_terms.values()
    )
    if uses_teacher and teacher is None:
        raise DistillerSetupError(
            f"method {name!r} distils from a teacher (its features or logits), but teacher is None"
        )
    return entry.cls(student, teacher, built_terms, merged)


def build_from_config(
    student: nn.Module, teacher: nn.Module | None, distiller_cfg: Mapping[str, Any]
) -> Distiller:
    """The method of a resolved ``distiller`` config section, with every term of non-zero weight."""
    built = {
        name: (float(weight), build_term(name, distiller_cfg.get(name)))
        for name, weight in distiller_cfg["terms"].items()
        if weight != 0
    }
    name = distiller_cfg["name"]
    # A method without options of its own may share its name with a term (kd, dtd_ka): that
    # section is the term's.
    options = distiller_cfg.get(name) if get_method(name).options else None
    return build_method(name, student, teacher, built, options)
