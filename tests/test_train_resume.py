"""``--resume`` continues exactly: k + m epochs in one go == k epochs, stop, resume for m (CPU)."""

import torch

from tskd_fast.cli import main
from tskd_fast.engine.checkpoint import CHECKPOINT, load_state

BASE = [
    "dataset.shapes.train_size=160",
    "dataset.shapes.test_size=64",
    "solver.batch_size=32",
    "solver.epochs=3",
    "solver.schedule=multistep",
    "solver.milestones=[2]",
    "solver.warmup_epochs=0.5",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "experiment.baseline=false",
    "experiment.seed=7",
    "distiller.name=dtd_ka",
    "teacher.name=resnet8",
]


def _strip(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def test_resume_is_bit_exact(tmp_path, capsys):
    torch.manual_seed(5)
    from tskd_fast.models import build_model

    teacher = tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, teacher)
    common = [*BASE, f"teacher.checkpoint={teacher}"]

    assert main(["train", "-o", str(tmp_path / "full"), *common]) == 0
    assert main(["train", "-o", str(tmp_path / "cut"), *common, "trainer.stop_after=2"]) == 0
    out = capsys.readouterr().out
    assert "stopped after epoch 2/3" in out
    cut = load_state(str(tmp_path / "cut" / CHECKPOINT))
    assert cut["epoch"] == 2

    # Without --resume an unfinished run is refused rather than restarted over.
    assert main(["train", "-o", str(tmp_path / "cut"), *common]) == 2
    assert "pass --resume" in capsys.readouterr().err

    assert main(["train", "-o", str(tmp_path / "cut"), *common, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out

    full = load_state(str(tmp_path / "full" / CHECKPOINT))
    resumed = load_state(str(tmp_path / "cut" / CHECKPOINT))
    assert resumed["epoch"] == full["epoch"] == 3
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert _strip(full["history"]) == _strip(resumed["history"])
    assert full["scheduler"]["last_epoch"] == resumed["scheduler"]["last_epoch"]
    for a, b in zip(full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert torch.equal(full["rng"][0]["torch"], resumed["rng"][0]["torch"])


def test_interrupt_mid_epoch_keeps_the_last_epoch(tmp_path, capsys, monkeypatch):
    from tskd_fast.distillers import Distiller

    common = [*BASE, "distiller.name=vanilla", "solver.epochs=2"]
    original = Distiller.forward_train
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # 5 steps per epoch: the 2nd step of epoch 2
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Distiller, "forward_train", interrupted)
    assert main(["train", "-o", str(tmp_path), *common]) == 130
    assert "--resume" in capsys.readouterr().err
    assert load_state(str(tmp_path / CHECKPOINT))["epoch"] == 1
    monkeypatch.setattr(Distiller, "forward_train", original)
    assert main(["train", "-o", str(tmp_path), *common, "--resume"]) == 0
    assert load_state(str(tmp_path / CHECKPOINT))["epoch"] == 2
