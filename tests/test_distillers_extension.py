"""The registry is open: a method with an adapter, a feature loss term, a warmup schedule, extra
state and its own parameter group is one register call and one config, and trains and resumes."""

import pytest
import torch
from torch import nn

from tskd_fast.cli import main
from tskd_fast.distillers import (
    Distiller,
    LossTerm,
    MethodEntry,
    TermEntry,
    register_method,
    register_term,
    registry,
)
from tskd_fast.engine.checkpoint import CHECKPOINT, load_state
from tskd_fast.schema import Field


class PooledFeatureMSE(LossTerm):
    """MSE between the adapted student pooled feature and the teacher's (a stand-in for HCL)."""

    needs_teacher = True
    needs_student_features = True
    needs_teacher_features = True

    def __init__(self, normalise: bool) -> None:
        super().__init__()
        self.normalise = normalise

    def forward(self, outputs):
        s, t = outputs.extras["adapted"], outputs.teacher_features["pooled_feat"]
        if self.normalise:
            s, t = nn.functional.normalize(s, dim=1), nn.functional.normalize(t, dim=1)
        return nn.functional.mse_loss(s, t)


class AdapterDistiller(Distiller):
    def __init__(self, student, teacher, terms, options=None):
        super().__init__(student, teacher, terms, options)
        width_s, width_t = student.stage_channels()[-1], teacher.stage_channels()[-1]
        self.adapter = nn.Linear(width_s, width_t)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def extra_modules(self):
        return {"adapter": self.adapter}

    def run_extras(self, image, outputs):
        self.steps += 1
        return {"adapted": self.adapter(outputs.student_features["pooled_feat"])}

    def param_groups(self):
        student = [p for p in self.trainable_modules()["student"].parameters()]
        adapter = [p for p in self.trainable_modules()["adapter"].parameters()]
        return [{"params": student}, {"params": adapter, "lr_scale": self.options["adapter_lr_scale"]}]

    def on_epoch_start(self, epoch, num_epochs):
        self.term_factors["pooled_mse"] = min(1.0, epoch / self.options["warmup_epochs"])

    def extra_state(self):
        return {"steps": self.steps.clone()}

    def load_extra_state(self, state):
        self.steps.copy_(state["steps"])


@pytest.fixture
def toy_method(monkeypatch):
    """Register the toy term and method for one test only (the registries are restored after)."""
    monkeypatch.setattr(registry, "_TERMS", dict(registry._TERMS))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    register_term(
        TermEntry("pooled_mse", PooledFeatureMSE, {"normalise": Field(True, bool, "unit-normalise")})
    )
    register_method(
        MethodEntry(
            "toy_adapter",
            AdapterDistiller,
            terms={"ce": 1.0, "pooled_mse": 2.0},
            needs_teacher=True,
            options={
                "warmup_epochs": Field(2.0, float, "loss warmup"),
                "adapter_lr_scale": Field(0.5, float, "adapter lr factor"),
            },
        )
    )


CONFIG = """
dataset: {name: shapes, num_workers: 0, shapes: {train_size: 96, test_size: 32}}
teacher: {name: resnet8, checkpoint: TEACHER}
student: {name: resnet8}
distiller:
  name: toy_adapter
  terms: {kd: 0.5}        # combined with the method's own terms by config
  toy_adapter: {warmup_epochs: 2}
solver: {epochs: 3, batch_size: 32, lr: 0.05}
trainer: {progress: false, tensorboard: false}
"""


def test_extension_method_trains_and_resumes(tmp_path, toy_method):
    from tskd_fast.models import build_model

    torch.manual_seed(0)
    teacher = tmp_path / "t.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, teacher)
    config = tmp_path / "toy.yaml"
    config.write_text(CONFIG.replace("TEACHER", str(teacher)))

    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", "-c", str(config), "-o", str(full)]) == 0
    assert main(["train", "-c", str(config), "-o", str(cut), "trainer.stop_after=1"]) == 0
    assert main(["train", "-c", str(config), "-o", str(cut), "--resume"]) == 0
    a, b = load_state(str(full / CHECKPOINT)), load_state(str(cut / CHECKPOINT))
    assert set(a["distiller"]["modules"]) == {"student", "adapter"}
    assert int(a["distiller"]["extra"]["steps"]) == int(b["distiller"]["extra"]["steps"]) == 9
    for name in ("student", "adapter"):
        for key, value in a["distiller"]["modules"][name].items():
            assert torch.equal(value, b["distiller"]["modules"][name][key]), (name, key)
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [
        g["lr"] for g in b["optimizer"]["param_groups"]
    ]
    history = a["history"]
    assert "train_pooled_mse" in history[0] and history[0]["train_pooled_mse"] == 0.0  # warmup factor 0
    assert history[1]["train_pooled_mse"] > 0 and "train_kd" in history[0]
