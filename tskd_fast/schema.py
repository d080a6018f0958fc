"""A small declarative config schema: typed fields with defaults, nested sections, validation.

A section is a ``dict`` mapping a key to a ``Field`` or to a nested section. ``resolve`` checks a
user mapping against a section and returns a complete nested dict (defaults filled in); every
problem is a ``ConfigError`` whose message names the dotted key and lists the valid choices.

It sits below everything that declares options (the engine's sections, the datasets, the
distillers and their loss terms), so none of them needs another to describe its keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from tskd_fast.errors import ConfigError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Field:
    """One config value.

    type: bool, int, float, str or list (then ``item`` gives the element type), or object for a
        value of several shapes (taken as YAML gives it; ``check`` validates it).
    nullable: None is allowed (and is the "not set" value of optional fields).
    choices: the allowed values, listed in the error message.
    check: extra validation, returns an error message (without the key) or None.
    """

    default: Any
    type: type
    doc: str = ""
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    item: type | None = None
    required: bool = False
    check: Callable[[Any], str | None] | None = None


Section = dict[str, Union[Field, "Section"]]


def positive(value: Any) -> str | None:
    return None if value is None or value > 0 else f"must be > 0, got {value}"


def non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else f"must be >= 0, got {value}"


def unit_interval(value: Any) -> str | None:
    return None if value is None or 0.0 <= value <= 1.0 else f"must be in [0, 1], got {value}"


def probability(value: Any) -> str | None:
    """A probability the target puts on the label: in (0, 1]."""
    return None if value is None or 0.0 < value <= 1.0 else f"must be in (0, 1], got {value}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_key_message(path: str, key: Any, valid: list[str]) -> str:
    """'unknown key a.b.c (did you mean ...?); valid keys in a.b: ...'."""
    hint = difflib.get_close_matches(str(key), valid, n=1)
    where = f" in {path}" if path else " at the top level"
    did_you_mean = f" (did you mean {_join(path, hint[0])!r}?)" if hint else ""
    return f"unknown key {_join(path, str(key))!r}{did_you_mean}; valid keys{where}: {', '.join(valid)}"


def _coerce_scalar(value: Any, kind: type, key: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "5e-4" as a string; accept the numbers people actually write.
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")


def coerce(field: Field, value: Any, key: str) -> Any:
    """Validate and convert one value for ``field``; raises ConfigError naming ``key``."""
    if value is None:
        if field.nullable:
            return None
        raise ConfigError(f"{key} must be set (null is not allowed)")
    if field.type is object:
        out = value
    elif field.type is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            if field.item is not None and not isinstance(value, Mapping):
                value = [value]
            else:
                raise ConfigError(f"{key} must be a list, got {value!r}")
        out = (
            [_coerce_scalar(v, field.item, f"{key}[{i}]") for i, v in enumerate(value)]
            if field.item
            else value
        )
    else:
        if field.type is str and isinstance(value, bool) and field.choices:
            value = str(value).lower()  # YAML reads false / off / no as a boolean; the choices say
        out = _coerce_scalar(value, field.type, key)
    if field.choices is not None and out not in field.choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, field.choices))}; got {out!r}")
    if field.check is not None:
        problem = field.check(out)
        if problem:
            raise ConfigError(f"{key} {problem}")
    return out


def defaults(section: Section) -> dict[str, Any]:
    """The section's default values as a nested dict."""
    return {k: defaults(v) if isinstance(v, dict) else _copy(v.default) for k, v in section.items()}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def resolve(section: Section, data: Any, path: str = "") -> dict[str, Any]:
    """Check ``data`` (a mapping or None) against ``section`` and fill in defaults."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'the config'} must be a mapping of keys to values, got {data!r}")
    for key in data:
        if key not in section:
            raise ConfigError(unknown_key_message(path, key, list(section)))
    out: dict[str, Any] = {}
    for key, spec in section.items():
        dotted = _join(path, key)
        if isinstance(spec, dict):
            out[key] = resolve(spec, data.get(key), dotted)
        elif key in data:
            out[key] = coerce(spec, data[key], dotted)
        elif spec.required:
            raise ConfigError(f"missing required key {dotted!r}" + (f" ({spec.doc})" if spec.doc else ""))
        else:
            out[key] = _copy(spec.default)
    return out


def describe(section: Section, path: str = "") -> list[str]:
    """One line per field, ``dotted.key = default  # doc``: the reference printed by ``--help-config``."""
    lines = []
    for key, spec in section.items():
        dotted = _join(path, key)
        if isinstance(spec, dict):
            lines += describe(spec, dotted)
        else:
            choices = f" [{' | '.join(map(str, spec.choices))}]" if spec.choices else ""
            doc = f"  # {spec.doc}" if spec.doc else ""
            lines.append(f"{dotted} = {spec.default!r}{choices}{doc}")
    return lines
