"""Loading model weights saved by RepDistiller, mdistiller, the official ReviewKD and TSKD code,
tskd-fast, or plain ``torch.save``.

A file holds a state_dict (raw, or under "model" / "state_dict"), possibly with wrapper prefixes
("module.", "_orig_mod."). A distiller saved whole keeps its student under "student." next to its
own modules: ReviewKD's ``abfs``, TSKD's ``ConvLSTMs``, mdistiller's ``teacher`` and method modules;
the student's weights are taken and those modules are left out. Any other key is an error that
names it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

# Non-tensor globals that are allowed in a checkpoint besides what `weights_only=True` accepts.
# Training scripts commonly store `opt` (an argparse.Namespace) and numpy scalars/arrays such as
# `best_acc` next to the weights. Rebuilding these only sets attributes or copies raw bytes; none of
# them can call arbitrary code, so allowlisting them keeps the load as safe as `weights_only=True`.
_SAFE_GLOBAL_NAMES = frozenset(
    {
        "argparse.Namespace",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
    }
)
# The two ways the weights-only unpickler names a type it refused (a GLOBAL, or a BUILD target).
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global|but got <class '([\w.]+)'>")
_STRIP_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, and torch.compile wrappers
_SHOW = 5
# The modules a distiller saved whole keeps next to its "student.": name -> whose they are.
DISTILLER_MODULES = {
    "teacher": "mdistiller's teacher",
    "abfs": "ReviewKD's ABF fusion",
    "ConvLSTMs": "TSKD's ConvLSTM heads",
    "conv_reg": "mdistiller FitNet's regressor",
    "connectors": "mdistiller OFD's connectors",
    "embed_s": "mdistiller CRD's embedding",
    "embed_t": "mdistiller CRD's embedding",
    "contrast": "mdistiller CRD's memory",
    "vid_modules": "mdistiller VID's regressors",
}


@dataclass
class ModelWeights:
    """The model weights read from a file: the state_dict, how the file held it (``layout``,
    for messages), and the architecture name the file records (tskd-fast files), if any."""

    state_dict: dict[str, Tensor]
    layout: str
    arch: str | None = None


def _is_safe_global(name: str) -> bool:
    return name in _SAFE_GLOBAL_NAMES or (name.startswith("numpy.dtypes.") and name.endswith("DType"))


def _resolve_global(name: str) -> Any:
    module, attr = name.rsplit(".", 1)
    with warnings.catch_warnings():
        # numpy 2 warns when a numpy-1 pickle refers to `numpy.core`; the alias still resolves.
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), attr)


def _read_checkpoint(path: str) -> Any:
    """torch.load with weights_only=True, widened only by the allowlist above.

    Never falls back to weights_only=False: a checkpoint that pickles anything else (typically a
    whole model saved with ``torch.save(model)``, or custom classes) could run arbitrary code when
    unpickled, so it is rejected with instructions to re-save its state_dict.
    """
    extra: list[tuple[Any, str]] = []
    while True:
        try:
            with torch.serialization.safe_globals(extra):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            match = _UNSUPPORTED_GLOBAL.search(str(exc))
            if match is None:
                raise ValueError(
                    f"could not read checkpoint {path}: the file is corrupt or not a PyTorch checkpoint"
                ) from exc
            name = match.group(1) or match.group(2)
            if not _is_safe_global(name) or any(name == n for _, n in extra):
                raise ValueError(
                    f"refusing to load checkpoint {path}: it contains the pickled Python object {name!r}, "
                    "which cannot be loaded safely (weights_only). This usually means the whole model or a "
                    "custom class was saved; in a trusted environment re-save only the weights, e.g. "
                    "torch.save({'model': model.state_dict()}, path)"
                ) from None
            try:
                extra.append((_resolve_global(name), name))
            except (ImportError, AttributeError) as imp_exc:
                raise ValueError(
                    f"could not read checkpoint {path}: it needs {name!r}, which is unavailable"
                ) from imp_exc
        except Exception as exc:
            raise ValueError(
                f"could not read checkpoint {path}: the file is corrupt or not a PyTorch checkpoint "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'empty or truncated file'})"
            ) from exc


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The model weights inside a loaded checkpoint, with wrapper prefixes removed.

    Accepts a raw state_dict, or a dict holding one under "model" (RepDistiller / mdistiller /
    tskd-fast) or "state_dict"; other entries (epoch, best_acc, optimizer, ...) are ignored. A
    leading "module." (DataParallel / DDP) or "_orig_mod." (torch.compile) on every key is
    stripped. From a whole distiller (keys under "student." beside ``DISTILLER_MODULES``) the
    student's weights are returned; a key of neither kind is a ValueError naming it.
    """
    return _extract(obj, source).state_dict


def _extract(obj: Any, source: str) -> ModelWeights:
    arch = obj.get("arch") if isinstance(obj, Mapping) and isinstance(obj.get("arch"), str) else None
    layout = "a state_dict"
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                # tskd-fast files record the architecture next to the weights.
                layout = f"a tskd-fast {arch} file" if arch else f"a state_dict under {key!r}"
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        if isinstance(obj, Mapping):
            desc = f"a dict with keys {list(obj)[:10]}"
        else:
            desc = f"a {type(obj).__name__}"
        raise ValueError(
            f"no recognisable weights in {source}: found {desc}; expected a state_dict (name -> tensor) "
            "or a dict holding one under 'model' or 'state_dict'"
        )
    sd = _strip_prefixes(dict(obj))
    if any(k.startswith("student.") for k in sd):
        sd, layout = _student_of_distiller(sd, source, layout)
    return ModelWeights(sd, layout, arch)


def _strip_prefixes(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                stripped = True
    return sd


def _student_of_distiller(sd: dict[str, Tensor], source: str, layout: str) -> tuple[dict[str, Tensor], str]:
    """The "student." weights of a distiller saved whole, and a description of the layout."""
    student: dict[str, Tensor] = {}
    others: dict[str, list[str]] = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        if head == "student":
            student[rest] = value
        else:
            others.setdefault(head, []).append(key)
    unknown = [k for head, keys in others.items() if head not in DISTILLER_MODULES for k in keys]
    if unknown:
        known = ", ".join(f"{name}.*" for name in DISTILLER_MODULES)
        raise ValueError(
            f"cannot map {len(unknown)} keys of {source} to the student: {_few(unknown)} (a distiller's file "
            f"holds student.* and its own modules {known})"
        )
    parts = ", ".join(f"{head}.* ({DISTILLER_MODULES[head]}) left out" for head in others)
    return _strip_prefixes(student), f"the student.* of a distiller ({parts or 'nothing else'}) in {layout}"


def read_weights(path: str | os.PathLike[str]) -> ModelWeights:
    """The model weights of a checkpoint file (see ``extract_state_dict``), read safely.

    Raises FileNotFoundError for a missing file and ValueError (naming the path) for an
    unreadable, unsafe or unrecognisable one.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    return _extract(_read_checkpoint(path), path)


def _classifier_key(model: nn.Module) -> str | None:
    """state_dict key of the classifier weight (num_classes, C), or None if there is no Linear."""
    get = getattr(model, "get_classifier", None)
    root = get() if callable(get) else model
    linears = [m for m in root.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    target = linears[-1]
    for name, module in model.named_modules():
        if module is target:
            return f"{name}.weight" if name else "weight"
    return None


def _few(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> None:
    """Load a teacher checkpoint file into ``model`` in place (tensors are read onto the CPU and
    copied into the model's parameters, keeping the model's device and dtype).

    Raises FileNotFoundError for a missing file, and ValueError (naming the path) for an unreadable
    or unsafe file, a file without recognisable weights, a classifier with a different number of
    classes, missing/unexpected keys (when ``strict``), or parameters of different shapes.
    """
    path = os.fspath(path)
    load_state_dict(model, read_weights(path).state_dict, path, strict=strict)


def load_state_dict(
    model: nn.Module, sd: Mapping[str, Tensor], source: str = "checkpoint", *, strict: bool = True
) -> None:
    """Load weights read by ``read_weights`` into ``model`` with the checks of ``load_checkpoint``
    (class count, missing / unexpected keys, shapes), errors naming ``source``."""
    path = source
    expected = model.state_dict()

    # A class-count mismatch is the most common mistake (e.g. a CIFAR-100 teacher for CIFAR-10),
    # so report it in plain terms before the generic shape check.
    clf_key = _classifier_key(model)
    if clf_key is not None and clf_key in sd and clf_key in expected:
        got, want = sd[clf_key].shape, expected[clf_key].shape
        if len(got) == 2 and got[0] != want[0]:
            raise ValueError(
                f"checkpoint {path} has {got[0]} classes, the model has {want[0]} "
                f"({clf_key}: {tuple(got)} vs {tuple(want)})"
            )

    # BatchNorm fills in a missing num_batches_tracked itself (checkpoints from old PyTorch lack it).
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
        raise ValueError(
            f"checkpoint {path} does not match the model ({type(model).__name__}): {'; '.join(parts)}. "
            "Was it saved from a different architecture?"
        )
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in sd.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"checkpoint {path} has {len(mismatched)} tensors whose shapes differ from the model "
            f"(checkpoint vs model): {_few(mismatched)}. Was it saved from a different architecture?"
        )
    if missing or unexpected:
        warnings.warn(
            f"loading {path} non-strictly: {len(missing)} missing keys ({_few(missing)}), "
            f"{len(unexpected)} unexpected keys ({_few(unexpected)})",
            stacklevel=2,
        )
    model.load_state_dict(sd, strict=strict)
