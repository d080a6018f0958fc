"""Registries of distillation methods and of the loss terms they combine.

A *term* is one weighted loss (``ce``, ``kd``, ``dtd_ka``; later feature losses such as ``hcl``)
with its options section ``distiller.<term>`` in the config. A *method* is a Distiller class plus
its default term weights and, optionally, its own options section ``distiller.<method>``. Adding a
method is one ``register_method`` call next to its class and one YAML config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tskd_fast.engine.schema import Section

if TYPE_CHECKING:
    from tskd_fast.distillers.base import Distiller
    from tskd_fast.distillers.terms import LossTerm


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
    _ensure_loaded()
    return dict(_TERMS)


def methods() -> dict[str, MethodEntry]:
    """All registered methods, in registration order."""
    _ensure_loaded()
    return dict(_METHODS)


def get_method(name: str) -> MethodEntry:
    """The method called ``name``; ValueError listing the valid names otherwise."""
    _ensure_loaded()
    if name not in _METHODS:
        raise ValueError(f"unknown distillation method {name!r}; valid methods: {', '.join(_METHODS)}")
    return _METHODS[name]


def _ensure_loaded() -> None:
    # The built-in methods register themselves on import; importing here keeps the registry usable
    # from code that imported only this module.
    import tskd_fast.distillers  # noqa: F401
