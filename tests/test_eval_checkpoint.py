"""``tskd-fast eval``: run folders and files of this package (the score equals the training log's),
RepDistiller and mdistiller model files, and the official ReviewKD and TSKD distilled checkpoints
in their key layouts, each built here from the official module structure; unmappable keys are
one-line errors naming them."""

import json

import pytest
import torch
from torch import nn

from tests.test_reference_flavours import OfficialEF
from tests.test_review_modules import OfficialStack
from tskd_fast.cli import main
from tskd_fast.engine.checkpoint_eval import evaluate_checkpoint
from tskd_fast.models import build_model
from tskd_fast.models.checkpoint import read_weights

DATA = ["dataset.shapes.train_size=64", "dataset.shapes.test_size=48", "dataset.num_workers=0"]
TRAIN = [
    *DATA,
    "teacher.name=resnet8",
    "experiment.baseline=false",
    "solver.epochs=2",
    "solver.batch_size=32",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.eval_batch_size=20",  # several batches, the last one short
]


def _assert_same_weights(model, state_dict):
    for key, value in model.state_dict().items():
        assert torch.equal(value, state_dict[key]), key


def test_eval_of_a_trained_run_matches_its_training_log(tmp_path, capsys):
    teacher = tmp_path / "t.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, teacher)
    run = tmp_path / "run"
    assert main(["train", "-o", str(run), *TRAIN, f"teacher.checkpoint={teacher}"]) == 0
    logged = json.loads((run / "results.json").read_text())
    for target in (run, run / "model_final.pth", run / "checkpoint.pt"):
        score = evaluate_checkpoint(str(target))
        assert score.top1 == logged["test_top1"] and score.top5 == logged["test_top5"], target
        assert score.model == "resnet8" and score.images == 48
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"top-1 {logged['test_top1']:.2f} %" in out and "tskd-fast resnet8 file" in out


def test_repdistiller_and_mdistiller_model_files(tmp_path):
    torch.manual_seed(0)
    student = build_model("resnet8", 20)
    teacher = build_model("resnet20", 20)
    # RepDistiller: {'epoch', 'model', 'best_acc', 'optimizer'}; mdistiller's student_best: {'model'}.
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    files = {
        "repdistiller.pth": {
            "epoch": 240,
            "model": student.state_dict(),
            "best_acc": 70.1,
            "optimizer": opt.state_dict(),
        },
        "student_best": {"model": student.state_dict()},
    }

    # mdistiller's whole-distiller files: DataParallel(distiller) with student and teacher inside.
    class MdistillerKD(nn.Module):
        def __init__(self):
            super().__init__()
            self.student, self.teacher = student, teacher

    files["latest"] = {"epoch": 3, "model": nn.DataParallel(MdistillerKD()).state_dict(), "best_acc": 1.0}
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        weights = read_weights(tmp_path / name)
        assert set(weights.state_dict) == set(student.state_dict()), name
        _assert_same_weights(student, weights.state_dict)
    assert "teacher.* (mdistiller's teacher) left out" in read_weights(tmp_path / "latest").layout
    score = evaluate_checkpoint(str(tmp_path / "latest"), None, [*DATA, "student.name=resnet8"])
    assert 0.0 <= score.top1 <= 100.0 and score.images == 48


class OfficialReviewKD(nn.Module):
    """The official CIFAR ReviewKD wrapper: ``self.student`` (RepDistiller key layout) and the ABF
    list ``self.abfs`` (deepest first); train.py saves ``cnn.state_dict()`` of it."""

    def __init__(self, student, in_channels, out_channels, shapes):
        super().__init__()
        self.student = student
        self.abfs = OfficialStack(in_channels, out_channels, shapes).abfs


class OfficialLSTMReview(nn.Module):
    """The official TSKD wrapper: ``self.student`` and one encoder-forecaster per branch in
    ``self.ConvLSTMs``; train.py saves ``cnn.state_dict()`` of it."""

    def __init__(self, student, widths, states):
        super().__init__()
        self.student = student
        self.ConvLSTMs = nn.ModuleList(OfficialEF(w, s) for w, s in zip(widths, states))


@pytest.mark.parametrize("layout", ["reviewkd", "tskd"])
def test_official_distilled_checkpoints_load_their_student(tmp_path, layout, capsys):
    torch.manual_seed(0)
    student = build_model("resnet8x4", 20)
    if layout == "reviewkd":
        wrapper = OfficialReviewKD(student, [64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32])
        others = "abfs.* (ReviewKD's ABF fusion)"
    else:
        wrapper = OfficialLSTMReview(student, [64, 64, 32], [16, 16, 8])
        others = "ConvLSTMs.* (TSKD's ConvLSTM heads)"
    path = tmp_path / f"cifar100_resnet8x4_resnet32x4_{layout}_best.pt"
    sd = wrapper.state_dict()
    assert any(k.startswith("student.") for k in sd) and any(not k.startswith("student.") for k in sd)
    torch.save(sd, path)  # a raw state_dict, as the official train.py writes it
    weights = read_weights(path)
    assert others in weights.layout and weights.arch is None
    _assert_same_weights(student, weights.state_dict)
    capsys.readouterr()
    assert main(["eval", str(path), *DATA, "student.name=resnet8x4", "dataset.normalize=cifar10"]) == 0
    out = capsys.readouterr().out
    assert others in out and "top-1" in out


def test_unmappable_keys_and_missing_architecture_are_one_line_errors(tmp_path, capsys):
    student = build_model("resnet8", 20)
    sd = {
        **{f"student.{k}": v for k, v in student.state_dict().items()},
        "projector.weight": torch.zeros(2, 2),
    }
    torch.save(sd, tmp_path / "odd.pt")
    assert main(["eval", str(tmp_path / "odd.pt"), *DATA, "student.name=resnet8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot map 1 keys" in err and "projector.weight" in err
    torch.save(student.state_dict(), tmp_path / "raw.pt")
    assert main(["eval", str(tmp_path / "raw.pt"), *DATA]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "student.name" in err
    assert main(["eval", str(tmp_path / "raw.pt"), *DATA, "student.name=resnet20"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match the model" in err
    assert main(["eval", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
