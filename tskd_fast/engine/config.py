"""Experiment configs: YAML + ``key=value`` overrides, validated against the schema with defaults.

Top-level sections (``tskd-fast train --help-config`` prints every key with its default):

* ``experiment``: output_dir, seed, baseline (also train the student alone), name.
* ``dataset``: name (registry), root, download, num_workers, subsets, augment, and the chosen
  dataset's own options under ``dataset.<name>``.
* ``student`` / ``teacher``: model names (``tskd_fast.models``); ``teacher.checkpoint`` (a
  RepDistiller / mdistiller ``{'model': state_dict}`` file, a raw state_dict, or this trainer's
  ``model_final.pth``) or ``teacher.train: true`` to train the teacher first (with ``teacher.solver``
  overriding ``solver`` keys that are not null).
* ``distiller``: name (method registry), ``terms`` (weight of each loss term; 0 = off; the
  method sets the defaults, a config's ``terms`` are merged over them, and switching
  ``distiller.name`` by an override starts again from the new method's defaults), one options
  section per loss term (``distiller.kd.temperature``), plus the method's own section if any.
* ``solver``: SGD recipe (epochs, global batch size, lr, momentum, nesterov, weight decay, multistep
  or cosine schedule, linear warmup).
* ``trainer``: device, AMP, progress bars, TensorBoard, eval batch size, stop_after, compile
  (tskd_fast.engine.compile).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import yaml

from tskd_fast.data.transforms import normalisation_problem
from tskd_fast.distillers.base import TEACHER_BN_MODES
from tskd_fast.engine.compile import COMPILE_MODES
from tskd_fast.errors import ConfigError
from tskd_fast.schema import (
    Field,
    Section,
    defaults,
    non_negative,
    positive,
    resolve,
    unknown_key_message,
)

# Keys that do not change what a run computes: they may differ between a run and its resume, and
# between a cached teacher and the run reusing it.
RUNTIME_KEYS = frozenset(
    {
        "experiment.name",
        "experiment.output_dir",
        "experiment.baseline",
        "dataset.root",
        "dataset.download",
        "dataset.num_workers",
        "trainer.device",
        "trainer.progress",
        "trainer.tensorboard",
        "trainer.eval_batch_size",
        "trainer.stop_after",
        "trainer.compile",
        "teacher.compile",
    }
)


def _solver_section() -> Section:
    return {
        "optimizer": Field("sgd", str, "optimiser", choices=("sgd",)),
        "epochs": Field(240, int, "training epochs", check=positive),
        "batch_size": Field(64, int, "global batch size (split evenly over processes)", check=positive),
        "lr": Field(0.05, float, "learning rate for the global batch size", check=positive),
        "momentum": Field(0.9, float, "SGD momentum", check=non_negative),
        "nesterov": Field(False, bool, "Nesterov momentum"),
        "weight_decay": Field(5e-4, float, "L2 weight decay", check=non_negative),
        "schedule": Field(
            "multistep", str, "lr schedule after warmup", choices=("multistep", "cosine", "constant")
        ),
        "milestones": Field([150, 180, 210], list, "epochs at which multistep multiplies the lr", item=int),
        "lr_decay": Field(0.1, float, "multistep factor", check=positive),
        "warmup_epochs": Field(
            0.0, float, "linear lr warmup from ~0, in epochs (per iteration)", check=non_negative
        ),
    }


def _partial(section: Section) -> Section:
    """The same keys, all nullable with default None ("inherit")."""
    return {
        k: Field(None, v.type, v.doc, True, v.choices, v.item, False, v.check) for k, v in section.items()
    }


def base_schema() -> Section:
    """Sections that do not depend on the chosen dataset or method."""
    return {
        "experiment": {
            "name": Field(None, str, "label shown in logs", nullable=True),
            "output_dir": Field(
                None, str, "run folder (default runs/<dataset>/<method>/<teacher>_<student>)", nullable=True
            ),
            "seed": Field(0, int, "seed of initialisation, shuffling and augmentation"),
            "baseline": Field(False, bool, "also train the student without distillation and compare"),
        },
        "dataset": {
            "name": Field("shapes", str, "dataset (registry)"),
            "root": Field("./data", str, "where the data is (or is downloaded to)"),
            "download": Field(True, bool, "download torchvision datasets when absent"),
            "num_workers": Field(
                2, int, "data loader worker processes per training process", check=non_negative
            ),
            "train_subset": Field(
                None, int, "use a fixed random subset of the training set", nullable=True, check=positive
            ),
            "test_subset": Field(
                None, int, "use a fixed random subset of the test set", nullable=True, check=positive
            ),
            "augment": Field(True, bool, "standard training augmentation (random crop + flip)"),
            "normalize": Field(
                None,
                object,
                "input normalisation: cifar100 | cifar10 | imagenet | [mean, std]; null: the dataset's own",
                nullable=True,
                check=normalisation_problem,
            ),
        },
        "student": {"name": Field(None, str, "student model (tskd_fast.models)", required=True)},
        "teacher": {
            "name": Field(None, str, "teacher model (tskd_fast.models)", nullable=True),
            "checkpoint": Field(None, str, "trained teacher weights (.pth)", nullable=True),
            "train": Field(
                False, bool, "no checkpoint: train the teacher first (cached in <output_dir>/teacher)"
            ),
            "bn_mode": Field(
                "eval",
                str,
                "teacher BatchNorm while distilling: eval (running statistics) or train (batch statistics, as "
                "the official ReviewKD / TSKD CIFAR code; the running statistics stay unchanged)",
                choices=TEACHER_BN_MODES,
            ),
            "compile": Field(
                "false",
                str,
                "torch.compile the teacher's forward where it runs outside a compiled step",
                choices=COMPILE_MODES,
            ),
            "solver": _partial(_solver_section()),
        },
        "distiller": {"name": Field("kd", str, "distillation method (registry)")},
        "solver": _solver_section(),
        "trainer": {
            "device": Field("auto", str, "auto | cpu | cuda | cuda:N"),
            "amp": Field(
                "auto",
                str,
                "autocast dtype; auto = bf16 on CUDA (fp16 without bf16), off on CPU",
                choices=("auto", "off", "bf16", "fp16"),
            ),
            "channels_last": Field(False, bool, "channels_last memory format (faster convs on GPUs)"),
            "sync_bn": Field(False, bool, "SyncBatchNorm in multi-process CUDA runs"),
            "find_unused_parameters": Field(False, bool, "DDP find_unused_parameters"),
            "progress": Field(True, bool, "tqdm progress bars (rank 0)"),
            "tensorboard": Field(True, bool, "TensorBoard logs in <run>/tb"),
            "eval_batch_size": Field(256, int, "evaluation batch size per process", check=positive),
            "stop_after": Field(
                None,
                int,
                "stop after this many epochs in this invocation (continue with --resume)",
                nullable=True,
                check=positive,
            ),
            "compile": Field(
                "false",
                str,
                "torch.compile the student's step (forward, losses, backward); reduce-overhead adds CUDA graphs",
                choices=COMPILE_MODES,
            ),
        },
    }


def full_schema(dataset_name: str, method_name: str) -> Section:
    """The schema for a config using this dataset and method (their option sections included)."""
    from tskd_fast.data import get_dataset
    from tskd_fast.distillers import registry

    try:
        dataset = get_dataset(dataset_name)
    except ValueError as exc:
        raise ConfigError(f"dataset.name: {exc}") from None
    try:
        distiller = registry.config_section(method_name)
    except ValueError as exc:
        raise ConfigError(f"distiller.name: {exc}") from None
    schema = base_schema()
    if dataset.options:
        schema["dataset"][dataset_name] = dataset.options
    schema["distiller"].update(distiller)
    return schema


def default_config_path() -> str:
    """The packaged config of the default run (tskd_fast/configs/default.yaml)."""
    return str(resources.files("tskd_fast") / "configs" / "default.yaml")


def find_config(path: str) -> str:
    """``path`` if it exists, else the packaged config of that name (``configs/cifar100/...``
    works from any directory once installed)."""
    if os.path.isfile(path):
        return path
    packaged = resources.files("tskd_fast") / "configs"
    rel = path[len("configs/") :] if path.startswith("configs/") else path
    candidate = packaged / rel
    if candidate.is_file():
        return str(candidate)
    raise ConfigError(f"config file not found: {path} (also looked in the packaged configs: {packaged})")


def read_yaml(path: str) -> dict[str, Any]:
    """Parse a YAML config file into a dict; a clear ConfigError for unreadable or malformed files."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"config {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"solver.lr=0.05"`` -> (["solver", "lr"], 0.05); the value is read as YAML (lists, null, ...)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. solver.lr=0.05)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set each dotted key of ``overrides`` in a copy of the raw config dict."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(path[: i + 1])} is a value ({child!r}), not a section"
                )
            node = child
        node[path[-1]] = value
    return data


def _check_names(cfg: dict[str, Any]) -> None:
    """Model names exist (canonicalised) and the teacher set-up is complete."""
    from tskd_fast.distillers import registry
    from tskd_fast.models import resolve_name

    for role in ("student", "teacher"):
        name = cfg[role]["name"]
        if name is not None:
            try:
                cfg[role]["name"] = resolve_name(name)
            except ValueError as exc:
                raise ConfigError(f"{role}.name: {exc}") from None
    weights = cfg["distiller"]["terms"]
    if all(w == 0 for w in weights.values()):
        raise ConfigError(f"distiller.terms: every weight is 0; set at least one of {', '.join(weights)}")
    negative = [k for k, w in weights.items() if w < 0]
    if negative:
        raise ConfigError(f"distiller.terms: weights must be >= 0, got negative {', '.join(negative)}")
    method = cfg["distiller"]["name"]
    needs = registry.needs_teacher(method, weights)
    teacher = cfg["teacher"]
    if needs:
        if teacher["name"] is None:
            raise ConfigError(f"teacher.name is required: method {method!r} distils from a teacher")
        if teacher["checkpoint"] is None and not teacher["train"]:
            raise ConfigError(
                "teacher.checkpoint is required (a trained teacher's .pth), or set teacher.train=true to "
                "train the teacher first"
            )
    ms = cfg["solver"]["milestones"]
    if sorted(ms) != ms:
        raise ConfigError(f"solver.milestones must be increasing, got {ms}")


def default_output_dir(cfg: Mapping[str, Any]) -> str:
    """runs/<dataset>/<method>/<teacher>_<student> (or <student> without a teacher)."""
    pair = cfg["student"]["name"]
    if cfg["distiller"]["name"] != "vanilla" and cfg["teacher"]["name"]:
        pair = f"{cfg['teacher']['name']}_{pair}"
    return os.path.join("runs", cfg["dataset"]["name"], cfg["distiller"]["name"], pair)


def _name_of(data: Mapping[str, Any], section: str) -> Any:
    sec = data.get(section)
    return sec.get("name") if isinstance(sec, Mapping) else None


def _drop_stale_sections(raw: Mapping[str, Any], merged: dict[str, Any], overrides: Sequence[str]) -> None:
    """Settings in a file that belong to the dataset or method named in that file are dropped when an
    override switches to another one: the term weights and the method's own options
    (``distiller.terms``, ``distiller.<method>``) and the dataset's options (``dataset.<name>``).
    Overrides of those keys on the same command line still apply."""
    from tskd_fast.distillers.registry import terms

    for section, stale in (("dataset", lambda old: [old]), ("distiller", lambda old: ["terms", old])):
        old, new = _name_of(raw, section), _name_of(merged, section)
        if old is None or new == old:
            continue
        for key in stale(old):
            if section == "distiller" and key in terms():
                continue  # a loss term's options are shared by every method
            if key in merged[section]:
                again = [o for o in overrides if o.strip().startswith(f"{section}.{key}.")]
                kept = apply_overrides({}, again).get(section, {}).get(key)
                if kept is None:
                    del merged[section][key]
                else:
                    merged[section][key] = kept


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``path`` (None: the default run's config), apply overrides, validate, fill defaults.

    Returns the complete nested config dict. Raises ConfigError with a one-line explanation.
    """
    raw = read_yaml(find_config(path) if path is not None else default_config_path())
    merged = apply_overrides(raw, overrides)
    _drop_stale_sections(raw, merged, overrides)
    return resolve_config(merged)


def resolve_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a raw nested config dict and fill in the defaults (see ``load_config``)."""
    top = base_schema()
    for key in raw:
        if key not in top:
            raise ConfigError(unknown_key_message("", key, list(top)))
    names = {}
    for section, default in (("dataset", "shapes"), ("distiller", "kd")):
        sec = raw.get(section) or {}
        if not isinstance(sec, Mapping):
            raise ConfigError(f"{section} must be a mapping of keys to values, got {sec!r}")
        name = sec.get("name", default)
        if not isinstance(name, str):
            raise ConfigError(f"{section}.name must be a string, got {name!r}")
        names[section] = name
    cfg = resolve(full_schema(names["dataset"], names["distiller"]), raw)
    _check_names(cfg)
    if cfg["experiment"]["output_dir"] is None:
        cfg["experiment"]["output_dir"] = default_output_dir(cfg)
    return cfg


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config without RUNTIME_KEYS: two runs with equal identities compute the same."""
    return {k: v for k, v in flatten(cfg).items() if k not in RUNTIME_KEYS}


def differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> list[str]:
    """Human-readable differences between two identities, e.g. ["solver.lr: 0.1 -> 0.05"]."""
    keys = sorted(set(old) | set(new))
    diffs = [
        f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
        for k in keys
        if old.get(k) != new.get(k)
    ]
    return diffs[:limit] + ([f"... ({len(diffs) - limit} more)"] if len(diffs) > limit else [])


def dump(cfg: Mapping[str, Any]) -> str:
    """The config as YAML text (section order kept)."""
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)


def schema_defaults(dataset_name: str = "shapes", method_name: str = "kd") -> dict[str, Any]:
    """Default values of every key for this dataset and method."""
    return defaults(full_schema(dataset_name, method_name))
