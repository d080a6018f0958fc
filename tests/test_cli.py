"""The command line: exit codes and one-line messages, listing, printing configs."""

import os
import subprocess
import sys

from tskd_fast.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RANK", None)
    return env


def test_config_typo_exits_2_with_one_line():
    for module in (["-m", "tskd_fast.train"], ["-m", "tskd_fast", "train"]):
        proc = subprocess.run(
            [sys.executable, *module, "solver.lrr=0.1"],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=REPO,
            timeout=120,
        )
        assert proc.returncode == 2
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert lines[0].startswith("tskd-fast: error: unknown key 'solver.lrr'")
        assert "valid keys in solver:" in lines[0]


def test_unknown_method_model_dataset_exit_2(capsys):
    cases = {
        "distiller.name=fitnet": "valid methods: ",
        "student.name=resnet7": "valid names: ",
        "dataset.name=mnist": "valid datasets: ",
    }
    for override, expected in cases.items():
        assert main(["train", override]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1


def test_missing_config_file_exit_2(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_print_and_help_config(capsys):
    assert (
        main(["train", "--print-config", "solver.lr=0.3", "--config", "configs/cifar100/kd/vgg13_vgg8.yaml"])
        == 0
    )
    out = capsys.readouterr().out
    assert "lr: 0.3" in out and "name: vgg13" in out
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "distiller.kd.temperature = 4.0" in out and "solver.milestones = [150, 180, 210]" in out


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "vanilla",
        "dtd_ka",
        "shapes",
        "cifar100",
        "resnet32x4",
        "configs/cifar100/kd/resnet56_resnet20.yaml",
    ):
        assert word in out


def test_overrides_may_precede_options(capsys):
    assert main(["train", "solver.lr=0.3", "--print-config"]) == 0
    assert "lr: 0.3" in capsys.readouterr().out
