"""Config -> models and distiller: the student, the teacher (loaded and checked) and the method."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from tskd_fast.distillers import Distiller, build_from_config, registry
from tskd_fast.errors import UserError
from tskd_fast.models import build_model, load_checkpoint


def build_student(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A freshly initialised ``student.name`` with ``num_classes`` outputs."""
    return build_model(cfg["student"]["name"], num_classes)


def build_teacher(name: str, checkpoint: str, num_classes: int) -> nn.Module:
    """``name`` loaded from ``checkpoint`` (RepDistiller / mdistiller / torchvision / tskd-fast files).

    Every problem (missing, corrupt or unsafe file, wrong architecture, a teacher trained for a
    different number of classes) becomes one UserError that names ``teacher.checkpoint``.
    """
    model = build_model(name, num_classes)
    try:
        load_checkpoint(model, checkpoint)
    except FileNotFoundError as exc:
        raise UserError(
            f"teacher.checkpoint: {exc}. Train the teacher first (a vanilla config, or teacher.train=true), or "
            "point teacher.checkpoint at a RepDistiller / mdistiller / torchvision weight file"
        ) from None
    except ValueError as exc:
        hint = ""
        if "classes" in str(exc):
            hint = f" (the dataset has {num_classes} classes)"
        raise UserError(f"teacher.checkpoint: {exc}{hint}") from None
    return model


def needs_teacher(cfg: Mapping[str, Any]) -> bool:
    """Whether the configured method / loss terms use a teacher."""
    return registry.needs_teacher(cfg["distiller"]["name"], cfg["distiller"]["terms"])


def build_distiller(cfg: Mapping[str, Any], student: nn.Module, teacher: nn.Module | None) -> Distiller:
    """The method's Distiller over ``student`` and the frozen ``teacher`` (its BatchNorm mode
    ``teacher.bn_mode``)."""
    distiller = build_from_config(student, teacher, cfg["distiller"])
    distiller.set_teacher_bn_mode(cfg["teacher"]["bn_mode"])
    return distiller
