"""Two-process DDP on the CPU (gloo) through torchrun: the student is wrapped, the teacher is not."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tskd_fast.engine.checkpoint import CHECKPOINT, load_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_processes_gloo(tmp_path):
    from tskd_fast.models import build_model

    torch.manual_seed(3)
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, teacher)
    out = tmp_path / "run"
    env = dict(
        os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1"
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
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
        "dataset.shapes.train_size=128",
        "dataset.shapes.test_size=65",
        "solver.batch_size=32",
        "solver.epochs=2",
        "experiment.baseline=false",
        "teacher.name=resnet8",
        f"teacher.checkpoint={teacher}",
        "trainer.device=cpu",
        "trainer.progress=false",
        "trainer.tensorboard=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Rank 0 alone logs and saves.
    assert proc.stdout.count("student epoch 2/2") == 1
    state = load_state(str(out / CHECKPOINT))
    assert state["world_size"] == 2 and state["epoch"] == 2 and len(state["rng"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])
    # 65 test images over 2 ranks: the shards are disjoint and complete, so accuracy is a multiple of 1/65.
    top1 = json.loads((out / "results.json").read_text())["test_top1"]
    assert abs(top1 * 65 / 100 - round(top1 * 65 / 100)) < 1e-6
    # 128 images / (2 ranks x 16 per rank) = 4 steps per epoch.
    assert state["scheduler"]["last_epoch"] == 8
    shutil.rmtree(out)
