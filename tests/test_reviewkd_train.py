"""``reviewkd`` through the CLI: a run with the kd term added resumes bit-exactly (student, ABFs,
optimiser, history with the HCL warmup), and two DDP processes train the ABFs with the student."""

import os
import subprocess
import sys

import pytest
import torch

from tskd_fast.cli import main
from tskd_fast.engine.checkpoint import CHECKPOINT, load_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = [
    "distiller.name=reviewkd",
    "distiller.terms.kd=0.5",
    "distiller.terms.hcl=2",
    "distiller.reviewkd.warmup_epochs=2",
    "distiller.reviewkd.lr_scale=0.5",
    "dataset.shapes.train_size=64",
    "dataset.shapes.test_size=32",
    "solver.batch_size=32",
    "solver.epochs=3",
    "experiment.baseline=false",
    "experiment.seed=3",
    "teacher.name=resnet8",
    "trainer.progress=false",
    "trainer.tensorboard=false",
]


@pytest.fixture
def teacher(tmp_path):
    from tskd_fast.models import build_model

    torch.manual_seed(1)
    path = tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, path)
    return path


def test_reviewkd_resumes_bit_exactly(tmp_path, teacher):
    common = [*BASE, f"teacher.checkpoint={teacher}"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", "-o", str(full), *common]) == 0
    assert main(["train", "-o", str(cut), *common, "trainer.stop_after=1"]) == 0
    assert main(["train", "-o", str(cut), *common, "--resume"]) == 0
    a, b = load_state(str(full / CHECKPOINT)), load_state(str(cut / CHECKPOINT))
    assert set(a["distiller"]["modules"]) == {"student", "fusion"}
    for name in ("student", "fusion"):
        for key, value in a["distiller"]["modules"][name].items():
            assert torch.equal(value, b["distiller"]["modules"][name][key]), (name, key)
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [
        g["lr"] for g in b["optimizer"]["param_groups"]
    ]
    assert a["optimizer"]["param_groups"][1]["lr"] == 0.5 * a["optimizer"]["param_groups"][0]["lr"]
    strip = [{k: v for k, v in row.items() if k != "time_s"} for row in a["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "time_s"} for row in b["history"]]
    # HCL warmup over 2 epochs: factor 0, 0.5, 1.
    assert strip[0]["train_hcl"] == 0.0 and strip[1]["train_hcl"] > 0 and strip[2]["train_hcl"] > 0
    assert strip[0]["train_kd"] > 0


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_reviewkd_trains_under_ddp(tmp_path, teacher):
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
    ]
    cmd += ["-o", str(out), *BASE, f"teacher.checkpoint={teacher}", "solver.epochs=1"]
    cmd += ["distiller.reviewkd.warmup_epochs=0", "trainer.device=cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = load_state(str(out / CHECKPOINT))
    assert state["world_size"] == 2
    fusion = state["distiller"]["modules"]["fusion"]
    # Saved unwrapped (no DDP "module." prefix), in the official key layout, and trained.
    assert "abfs.0.conv1.0.weight" in fusion and not any(k.startswith("module.") for k in fusion)
    assert int(fusion["abfs.3.conv1.1.num_batches_tracked"]) == 2  # 64 images, 2 x 16 per step
    assert state["history"][0]["train_hcl"] > 0
