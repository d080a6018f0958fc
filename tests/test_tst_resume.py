"""A ``tst`` run killed inside a search phase resumes bit-exactly, and its run folder holds what the
module learned (per-epoch op probabilities/magnitudes, per-pass search log, image grid)."""

import csv

import torch

from tskd_fast.cli import main
from tskd_fast.distillers.tst import TSTDistiller
from tskd_fast.engine.checkpoint import CHECKPOINT, load_state

BASE = [
    "distiller.name=tst",
    "teacher.name=resnet8",
    "dataset.shapes.train_size=64",
    "dataset.shapes.test_size=16",
    "solver.batch_size=32",  # 2 steps per epoch and per search pass
    "solver.epochs=2",
    "distiller.tst.search_at=[0.5]",  # one phase, before epoch 2
    "distiller.tst.search_length=1.0",  # of 2 passes
    "distiller.tst.grid_samples=4",
    "experiment.baseline=false",
    "experiment.seed=3",
    "trainer.progress=false",
]


def _strip(rows):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]


def test_resume_inside_a_search_phase_is_bit_exact(tmp_path, capsys, monkeypatch):
    from tskd_fast.models import build_model

    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, teacher)
    common = [*BASE, f"teacher.checkpoint={teacher}"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", "-o", str(full), *common, "trainer.tensorboard=true"]) == 0

    original = TSTDistiller.phase_step
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the 2nd step of the 2nd search pass
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TSTDistiller, "phase_step", interrupted)
    assert main(["train", "-o", str(cut), *common, "trainer.tensorboard=false"]) == 130
    saved = load_state(str(cut / CHECKPOINT))
    assert (saved["epoch"], saved["phase_done"]) == (1, 1)  # inside the phase before epoch 2
    monkeypatch.setattr(TSTDistiller, "phase_step", original)
    capsys.readouterr()
    assert main(["train", "-o", str(cut), *common, "trainer.tensorboard=false", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out

    a, b = load_state(str(full / CHECKPOINT)), load_state(str(cut / CHECKPOINT))
    assert a["epoch"] == b["epoch"] == 2 and a["phase_done"] == b["phase_done"] == 0
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    ea, eb = a["distiller"]["extra"], b["distiller"]["extra"]
    for key in ("probability_logits", "magnitude_logits"):
        assert torch.equal(ea["augment"][key], eb["augment"][key]), key
    assert torch.equal(ea["augment"]["_extra_state"]["generator"], eb["augment"]["_extra_state"]["generator"])
    assert ea["plateau_last"] == eb["plateau_last"]
    for sa, sb in zip(ea["search_optimizer"]["state"].values(), eb["search_optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert _strip(a["history"]) == _strip(b["history"])
    assert _strip(a["phase_history"]) == _strip(b["phase_history"]) and len(a["phase_history"]) == 2

    # What the module learned, in the run folder.
    with open(full / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"tst_p_rotate", "tst_m_rotate", "tst_p_cutout"} <= set(rows[0])
    assert "tst_m_cutout" not in rows[0]  # fixed ops have no magnitude
    assert rows[0]["tst_m_rotate"] != rows[1]["tst_m_rotate"]  # the search moved it
    with open(full / "phase_log.csv") as f:
        passes = list(csv.DictReader(f))
    assert [(p["before_epoch"], p["pass"]) for p in passes] == [("2", "1"), ("2", "2")]
    assert {"loss", "teacher_ce", "student_term", "lr"} <= set(passes[0])
    grid = full / "tst_search_before_epoch_2.png"
    assert grid.is_file() and grid.stat().st_size > 0
    assert (full / "tb" / "phase").is_dir()
