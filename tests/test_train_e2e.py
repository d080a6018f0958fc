"""End-to-end runs on the embedded dataset: the default job, teacher loading, resume, bad input.

Everything is tiny (128 training images, resnet8, 1-3 epochs) so the file runs in well under a minute.
"""

import hashlib
import json
import os

import numpy as np
import torch

from tskd_fast.cli import main
from tskd_fast.distillers.base import Distiller
from tskd_fast.engine.checkpoint import CHECKPOINT, FINAL

TINY = [
    "dataset.shapes.train_size=128",
    "dataset.shapes.test_size=64",
    "solver.batch_size=32",
    "solver.epochs=2",
    "teacher.solver.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
]


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run(tmp, *overrides):
    return main(["train", "-o", str(tmp), *TINY, *overrides])


def test_default_job_trains_teacher_student_and_baseline(tmp_path, capsys):
    assert _run(tmp_path) == 0
    out = capsys.readouterr().out
    for label in ("teacher", "student", "baseline", "distillation gain over the baseline"):
        assert label in out
    for stage in ("teacher", "kd", "baseline"):
        folder = tmp_path / stage
        assert (folder / CHECKPOINT).is_file() and (folder / FINAL).is_file()
        assert (folder / "log.csv").read_text().count("\n") == 3 - (stage == "teacher")
        assert json.loads((folder / "results.json").read_text())["test_top1"] is not None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["label"] for r in summary] == ["teacher", "student", "baseline"]

    # The same command again reuses every finished run (the cached teacher included).
    before = _digest(tmp_path / "kd" / CHECKPOINT)
    assert _run(tmp_path) == 0
    assert capsys.readouterr().out.count("reusing the finished run") == 3

    # A different config in the same folder is refused, and nothing is touched.
    assert _run(tmp_path, "solver.lr=0.2") == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("tskd-fast: error: teacher:")
        and "solver.lr: 0.05 -> 0.2" in err
        and "--overwrite" in err
    )
    assert _digest(tmp_path / "kd" / CHECKPOINT) == before

    # Another method next to it reuses the cached teacher and baseline and trains only itself.
    assert _run(tmp_path, "distiller.name=dtd_ka") == 0
    out = capsys.readouterr().out
    assert "teacher: reusing" in out and "baseline: reusing" in out
    assert (tmp_path / "dtd_ka" / FINAL).is_file()


def _teacher_file(path, classes=20, layout="repdistiller"):
    torch.manual_seed(123)
    from tskd_fast.models import build_model

    model = build_model("resnet8", classes)
    sd = model.state_dict()
    if layout == "repdistiller":
        # RepDistiller's train_teacher.py saves the weights next to bookkeeping entries.
        obj = {
            "epoch": 240,
            "model": sd,
            "best_acc": np.float64(71.5),
            "optimizer": {"state": {}, "param_groups": []},
        }
    else:
        obj = {f"module.{k}": v for k, v in sd.items()}  # a raw DataParallel state_dict
    torch.save(obj, path)
    return model


def test_teacher_checkpoint_in_repdistiller_layout(tmp_path, capsys):
    for layout in ("repdistiller", "raw"):
        path = tmp_path / f"teacher_{layout}.pth"
        model = _teacher_file(path, layout=layout)
        out_dir = tmp_path / f"run_{layout}"
        rc = _run(
            out_dir,
            "teacher.name=resnet8",
            f"teacher.checkpoint={path}",
            "experiment.baseline=false",
            "solver.epochs=1",
        )
        assert rc == 0
        out = capsys.readouterr().out
        result = json.loads((out_dir / "results.json").read_text())
        # The teacher accuracy printed is that of the file's weights on the test split.
        from tskd_fast.data import build_data
        from tskd_fast.engine.config import load_config

        data = build_data(load_config(None, TINY)["dataset"])
        model.eval()
        with torch.no_grad():
            hits = sum(int(model(x[None]).argmax() == y) for x, y in data.test)
        assert abs(result["teacher_top1"] - 100.0 * hits / len(data.test)) < 1e-6
        assert f"teacher top-1 on the test split: {result['teacher_top1']:.2f}%" in out


def test_bad_teacher_checkpoints_are_one_line_errors(tmp_path, capsys):
    wrong = tmp_path / "cifar10_teacher.pth"
    _teacher_file(wrong, classes=10)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02not a checkpoint at all")
    cases = [
        (wrong, "has 10 classes, the model has 20"),
        (corrupt, "corrupt or not a PyTorch checkpoint"),
        (tmp_path / "missing.pth", "checkpoint file not found"),
    ]
    for path, expected in cases:
        rc = _run(
            tmp_path / "out",
            "teacher.name=resnet8",
            f"teacher.checkpoint={path}",
            "experiment.baseline=false",
        )
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err
        assert err.startswith("tskd-fast: error: teacher.checkpoint:")
    assert not (tmp_path / "out" / CHECKPOINT).exists()


def test_corrupt_run_checkpoint_is_left_alone(tmp_path, capsys):
    tmp_path.mkdir(exist_ok=True)
    ckpt = tmp_path / CHECKPOINT
    ckpt.write_bytes(b"garbage")
    rc = _run(tmp_path, "distiller.name=vanilla", "student.name=resnet8", "experiment.baseline=false")
    assert rc == 2 and "corrupt" in capsys.readouterr().err
    assert ckpt.read_bytes() == b"garbage"


def test_resume_needs_a_run(tmp_path, capsys):
    assert _run(tmp_path / "empty", "--resume", "distiller.name=vanilla", "experiment.baseline=false") == 2
    assert "no run to continue" in capsys.readouterr().err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = _run(blocker / "run", "distiller.name=vanilla", "experiment.baseline=false")
    assert rc == 2 and "cannot create the output directory" in capsys.readouterr().err
    assert os.path.isfile(blocker)


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path, monkeypatch):
    """trainer.amp and trainer.channels_last take effect: every training step runs under bf16
    autocast, on channels_last images, with the student's conv weights and activations in
    channels_last."""
    steps = []
    activations = []
    forward_train = Distiller.forward_train

    def recording_forward_train(self, image, target, **kwargs):
        convs = [m for m in self.student.modules() if isinstance(m, torch.nn.Conv2d)]
        if not activations:  # the first conv sees the full 32x32 image: its layout is telling
            convs[0].register_forward_hook(lambda m, i, out: activations.append(out))
        logits, losses = forward_train(self, image, target, **kwargs)
        steps.append(
            {
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
                "images_channels_last": image.is_contiguous(memory_format=torch.channels_last),
                "weights_channels_last": all(
                    c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
                ),
                "logits_dtype": logits.dtype,
            }
        )
        return logits, losses

    monkeypatch.setattr(Distiller, "forward_train", recording_forward_train)
    rc = _run(
        tmp_path,
        "distiller.name=vanilla",
        "experiment.baseline=false",
        "solver.epochs=1",
        "trainer.amp=bf16",
        "trainer.channels_last=true",
    )
    assert rc == 0
    assert json.loads((tmp_path / "results.json").read_text())["test_top1"] is not None
    assert len(steps) == 4  # 128 images in batches of 32
    for step in steps:
        assert step == {
            "autocast": True,
            "autocast_dtype": torch.bfloat16,
            "images_channels_last": True,
            "weights_channels_last": True,
            "logits_dtype": torch.bfloat16,
        }
    first = activations[0]
    assert first.dim() == 4 and first.shape[-1] > 1 and first.dtype == torch.bfloat16
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    assert not torch.is_autocast_enabled("cpu")  # the trainer leaves no autocast behind
