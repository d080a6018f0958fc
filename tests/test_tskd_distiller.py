"""The ``tskd`` method: schedule, in-memory snapshots, the review loss on review epochs only, frozen
ConvLSTMs outside them, configs for every CIFAR-100 pair, bad input, exact resume and two-process DDP."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tskd_fast.cli import main
from tskd_fast.distillers import build_method, methods
from tskd_fast.distillers.terms import CrossEntropyTerm
from tskd_fast.distillers.tskd import REVIEW_LOSS, ReviewSchedule
from tskd_fast.engine.build import build_distiller
from tskd_fast.engine.checkpoint import CHECKPOINT, load_state
from tskd_fast.engine.config import load_config
from tskd_fast.engine.optim import build_optimizer
from tskd_fast.models import build_model

TINY = [
    "distiller.name=tskd",
    "student.name=resnet8",
    "teacher.name=resnet8",
    "distiller.tskd.hidden_channels=[4,4,3]",
]
CONFIGS = sorted((Path(__file__).parents[1] / "tskd_fast" / "configs" / "cifar100" / "tskd").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _distiller(*overrides):
    cfg = load_config(None, [*TINY, *overrides])
    torch.manual_seed(0)
    return build_distiller(cfg, build_model("resnet8", 20), build_model("resnet8", 20)), cfg


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 20, (4,), generator=g)


def _fill_snapshots(d, num_epochs=8):
    """Memory epochs 0, 1, 2 (period 1 epoch in an 8-epoch run), the student moving between them."""
    for epoch in range(3):
        d.on_epoch_start(epoch, num_epochs)
        assert d.phase == "memory" and not d.reviewing
        with torch.no_grad():
            for p in d.student.parameters():
                p.add_(0.05 * torch.randn_like(p))
        d.on_epoch_end(epoch)
        for key, value in d.student.state_dict().items():
            assert torch.equal(d.snapshots[epoch].state_dict()[key], value), key


def test_schedule_reproduces_the_reference_and_scales_with_the_run():
    ref = ReviewSchedule(5 / 240)
    assert ref.period_epochs(240) == 5
    assert ref.review_epochs(240) == list(range(15, 240, 20))  # 12 review epochs, as in TSKD_v1
    assert [ref.phase(e, 240) for e in (0, 5, 10, 15, 20, 3)] == [
        ("memory", 0),
        ("memory", 1),
        ("memory", 2),
        ("review", -1),
        ("memory", 0),
        ("general", -1),
    ]
    assert ref.review_epochs(8) == [3, 7]  # the default 8-epoch run: period 1 epoch
    assert ReviewSchedule(0.25).review_epochs(8) == [6]
    assert ReviewSchedule(0.1, memory_points=2).review_epochs(30) == [6, 15, 24]


def test_review_loss_on_review_epochs_only():
    d, _ = _distiller()
    d.train()
    x, y = _batch()
    d.on_epoch_start(3, 8)
    assert d.phase == "review" and not d.reviewing  # no snapshots yet: nothing to review
    _fill_snapshots(d)
    assert all(not p.requires_grad for p in d.snapshots.parameters())
    d.on_epoch_start(3, 8)
    assert d.reviewing
    _, losses = d.forward_train(x, y, epoch=3)
    assert set(losses) == {"ce", "kd", REVIEW_LOSS}
    review = losses[REVIEW_LOSS]
    assert review.dim() == 0 and torch.isfinite(review) and review > 0
    student = list(d.student.parameters())
    head = list(d.review.parameters())
    grads = torch.autograd.grad(review, student + head, allow_unused=True)
    assert (
        sum(float(g.abs().sum()) for g in grads[: len(student)] if g is not None) > 0
    )  # reaches the student
    assert all(g is not None and torch.isfinite(g).all() for g in grads[len(student) :])  # and every ConvLSTM
    assert all(g.abs().sum() > 0 for g in grads[len(student) :] if g is not None)

    d.on_epoch_start(4, 8)  # memory epoch again
    _, losses = d.forward_train(x, y, epoch=4)
    assert set(losses) == {"ce", "kd"}


def test_convlstms_do_not_change_outside_review_epochs():
    d, cfg = _distiller()
    d.train()
    x, y = _batch()
    solver = {**cfg["solver"], "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}
    opt = build_optimizer(d.param_groups(), solver)
    head = dict(d.review.named_parameters())
    assert all(any(p is q for g in opt.param_groups for q in g["params"]) for p in head.values())

    def step(epoch):
        d.on_epoch_start(epoch, 8)
        _, losses = d.forward_train(x, y, epoch=epoch)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    _fill_snapshots(d)
    step(3)  # review: the ConvLSTMs train and get momentum buffers
    before = {k: p.detach().clone() for k, p in head.items()}
    buffers = {k: opt.state[p]["momentum_buffer"].clone() for k, p in head.items()}
    student_before = [p.detach().clone() for p in d.student.parameters()]
    step(4)  # memory epoch
    for k, p in head.items():
        assert p.grad is None, k
        assert torch.equal(p, before[k]), k
        assert torch.equal(opt.state[p]["momentum_buffer"], buffers[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(student_before, d.student.parameters(), strict=True))


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_cifar_config_builds_its_review_head(config):
    cfg = load_config(str(config))
    assert cfg["distiller"]["name"] == "tskd" and cfg["distiller"]["tskd"]["period"] * 240 == pytest.approx(5)
    with torch.device("meta"):  # shapes only: no weights to initialise, no arithmetic
        student, teacher = build_model(cfg["student"]["name"], 100), build_model(cfg["teacher"]["name"], 100)
        d = build_distiller(cfg, student, teacher)
        student.eval()
        feats = student(torch.zeros(1, 3, 32, 32), with_features=True)[1]["feats"][:3]
    assert d.review.map_sizes == [tuple(f.shape[2:]) for f in feats]
    for branch, f in zip(d.review.branches, feats, strict=True):  # the reference's width rule
        state = (f.shape[2] + 1) // 2
        assert branch.encoder.hidden_channels == (64 if state >= 16 else 32)


def test_bad_options_and_unusable_students_are_named():
    student, teacher = build_model("resnet8", 20), build_model("resnet8", 20)
    terms = {"ce": (1.0, CrossEntropyTerm())}
    with pytest.raises(ValueError, match="distiller.tskd.perod"):
        build_method("tskd", student, teacher, terms, {"perod": 0.1})
    with pytest.raises(ValueError, match="distiller.tskd.period"):
        build_method("tskd", student, teacher, terms, {"period": 0.0})
    with pytest.raises(ValueError, match="distiller.tskd.attention_norm"):
        build_method("tskd", student, teacher, terms, {"attention_norm": "width"})
    with pytest.raises(ValueError, match="student: tskd reviews 5 feature maps"):
        build_method("tskd", student, teacher, terms, {"branches": 5})
    with pytest.raises(ValueError, match="hidden_channels must give one width per branch"):
        build_method("tskd", student, teacher, terms, {"hidden_channels": [8, 8]})
    with pytest.raises(ValueError, match="student: tskd needs a model called as"):
        build_method("tskd", nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), teacher, terms, {})
    with pytest.raises(ValueError, match="teacher is None"):
        build_method("tskd", student, None, terms, {})
    assert main(["train", "--print-config", *TINY, "distiller.tskd.memory_point=2"]) == 2


def test_listed_by_the_cli(capsys):
    assert "tskd" in methods()
    assert main(["list", "methods"]) == 0
    assert "tskd" in capsys.readouterr().out


RUN = [
    *TINY,
    "dataset.shapes.train_size=64",
    "dataset.shapes.test_size=32",
    "solver.batch_size=32",
    "solver.epochs=5",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "experiment.baseline=false",
    "experiment.seed=3",
]


def test_resume_across_a_review_epoch_is_bit_exact(tmp_path):
    """5 epochs: memory 0, 1, 2, review 3, memory 4. Cut after epoch 3 (before the review), resume."""
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, teacher)
    common = [*RUN, f"teacher.checkpoint={teacher}"]
    assert main(["train", "-o", str(tmp_path / "full"), *common]) == 0
    assert main(["train", "-o", str(tmp_path / "cut"), *common, "trainer.stop_after=3"]) == 0
    assert main(["train", "-o", str(tmp_path / "cut"), *common, "--resume"]) == 0
    full = load_state(str(tmp_path / "full" / CHECKPOINT))
    resumed = load_state(str(tmp_path / "cut" / CHECKPOINT))
    history = [{k: v for k, v in row.items() if k != "time_s"} for row in full["history"]]
    assert history == [{k: v for k, v in row.items() if k != "time_s"} for row in resumed["history"]]
    assert [row["tskd_review_epoch"] for row in history] == [0, 0, 0, 1, 0]
    assert f"train_{REVIEW_LOSS}" in history[3] and f"train_{REVIEW_LOSS}" not in history[2]
    for name in ("student", "review"):
        for key, value in full["distiller"]["modules"][name].items():
            assert torch.equal(value, resumed["distiller"]["modules"][name][key]), (name, key)
    for a, b in zip(
        full["distiller"]["extra"]["snapshots"], resumed["distiller"]["extra"]["snapshots"], strict=True
    ):
        for key, value in a.items():
            assert torch.equal(value, b[key]), key
    assert full["distiller"]["extra"]["filled"] == [True, True, True]
    for a, b in zip(full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_processes_review_epoch(tmp_path):
    """DDP (gloo, CPU): the ConvLSTMs are wrapped while the first epochs do not run them, and the
    review epoch then trains them on both ranks."""
    repo = str(Path(__file__).parents[1])
    torch.manual_seed(3)
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, teacher)
    env = dict(
        os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1"
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "tskd_fast.train",
        "-o",
        str(out),
        *TINY,
        f"teacher.checkpoint={teacher}",
        "dataset.shapes.train_size=128",
        "dataset.shapes.test_size=64",
        "solver.batch_size=32",
        "solver.epochs=4",
        "experiment.baseline=false",
        "trainer.device=cpu",
        "trainer.progress=false",
        "trainer.tensorboard=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = load_state(str(out / CHECKPOINT))
    assert state["world_size"] == 2 and [row["tskd_review_epoch"] for row in state["history"]] == [0, 0, 0, 1]
    assert state["history"][3][f"train_{REVIEW_LOSS}"] > 0
    review = state["distiller"]["modules"]["review"]
    assert review and not any(k.startswith("module.") for k in review)
