"""`tskd-fast bench` / `python -m tskd_fast.bench`: options, one-line errors, families missing
from the build, the outputs (table, CSV, JSON, chart) and the training-step benchmark."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

from tests.bench_standins import install_missing
from tskd_fast import functional, reference
from tskd_fast.bench import steps
from tskd_fast.bench.cases import FAMILIES, Shape
from tskd_fast.bench.timing import Plan
from tskd_fast.cli import main
from tskd_fast.errors import UserError
from tskd_fast.ops import _extension

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _small(monkeypatch, name, shape):
    monkeypatch.setitem(FAMILIES, name, dataclasses.replace(FAMILIES[name], shapes=(shape,)))


def _one_line_error(capsys, argv, *fragments):
    assert main(["bench", *argv]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_options_are_one_line_errors(capsys, monkeypatch):
    _one_line_error(capsys, ["--ops", "kd_loss,nope"], "--ops", "kd_loss, dtd, convlstm")
    _one_line_error(capsys, ["--dtype", "float8"], "--dtype", "bfloat16")
    _one_line_error(capsys, ["--methods", "fitnet"], "--methods", "dtd_ka")
    _one_line_error(capsys, ["--repeat", "0"], "--repeat must be >= 1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _one_line_error(capsys, ["--device", "cuda"], "no CUDA device is available")


def test_png_chart_without_matplotlib_fails_before_measuring(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = tmp_path / "speedups.png"
    _one_line_error(capsys, ["--plot", str(png)], "needs matplotlib", ".svg")
    assert not png.exists()


def test_python_dash_m_entry_point():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "tskd_fast.bench", "--ops", "nope"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tskd-fast: error: --ops 'nope'")


def test_a_family_missing_from_the_build_is_one_note(capsys, monkeypatch):
    monkeypatch.delattr(functional, "hcl_loss", raising=False)
    assert main(["bench", "--ops", "hcl", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert "note: hcl: not available in this build (tskd_fast.functional.hcl_loss is missing)" in out
    assert "Traceback" not in out + err and "Fused ops" not in out


def test_quick_run_writes_table_csv_json_and_svg_chart(capsys, monkeypatch, tmp_path):
    install_missing(monkeypatch)
    _small(monkeypatch, "kd_loss", Shape("64x100", (64, 100), quick=True))
    _small(monkeypatch, "hcl", Shape("2 levels", ((4, 8, 8, 8), (4, 16, 4, 4)), quick=True))
    paths = {ext: tmp_path / f"bench.{ext}" for ext in ("csv", "json", "svg")}
    argv = ["bench", "--ops", "kd_loss,hcl", "--quick", "--no-compile", "--repeat", "3", "--device", "cpu"]
    argv += ["--csv", str(paths["csv"]), "--json", str(paths["json"]), "--plot", str(paths["svg"])]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    doc = json.loads(paths["json"].read_text())
    copy = doc["machine"]["copy_gbps_cpu"]
    assert copy > 0 and len(doc["machine"]["copy_gbps_cpu_runs"]) == 2
    backends = {(r["op"], r["backend"]) for r in doc["ops"]}
    fused = {"cpu"} if _extension.has_cpu_kernels() else set()
    assert {(op, b) for op in ("kd_loss", "hcl") for b in {"eager"} | fused} <= backends
    for row in doc["ops"]:
        # Each case's share is over the copy timed in its own rounds, not the run's best copy.
        assert row["copy_gbps"] > 0
        assert row["bw_share"] == pytest.approx(row["gbps"] / row["copy_gbps"], rel=0.01)
        assert row["samples"] == 3 and row["peak_mib"] is not None
    with open(paths["csv"]) as f:
        assert [r["backend"] for r in csv.DictReader(f)] == [r["backend"] for r in doc["ops"]]
    assert "| kd_loss | 64x100 | float32 | cpu | eager |" in out
    assert "Fused path slower than a baseline:" in out and "Copy bandwidth" in out
    svg = ET.parse(paths["svg"]).getroot()
    labels = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert ("kd_loss 64x100 float32 cpu/cpu" in labels) == bool(fused)


def test_training_step_of_a_method_times_reference_against_auto(monkeypatch):
    assert "vanilla" not in steps.distilling_methods()
    assert {"kd", "dtd_ka"} <= set(steps.distilling_methods())
    cfg = steps.method_config("kd")
    assert (cfg["dataset"]["name"], cfg["teacher"]["name"], cfg["student"]["name"]) == (
        "cifar100",
        "resnet32x4",
        "resnet8x4",
    )
    calls = []
    original = reference.kd_loss
    monkeypatch.setattr(reference, "kd_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    fns = steps.build_step("kd", torch.device("cpu"), batch=2)
    fns["reference"]()
    assert calls and os.environ.get("TSKD_FAST_BACKEND") is None
    calls.clear()
    fns["auto"]()
    assert (calls == []) == _extension.has_cpu_kernels()

    # The timing itself on a small pair (the configs above were the packaged resnet32x4 -> resnet8x4 ones).
    monkeypatch.setattr(steps, "TEACHER", "resnet8")
    monkeypatch.setattr(steps, "STUDENT", "resnet8")
    plan = Plan(warmup=1, repeat=3, min_repeat=3)
    (result,) = steps.run_method("kd", torch.device("cpu"), 2, plan, with_memory=True)
    assert result.mode == "eager" and result.compile_s is None
    assert result.batch == 2 and result.speedup == pytest.approx(result.reference_ms / result.auto_ms)
    expected = (result.auto_ms - result.student_ms - result.teacher_ms) / result.auto_ms
    assert result.distill_share_auto == pytest.approx(expected)
    assert result.peak_mib_reference > 0 and result.peak_mib_auto > 0


def test_a_method_that_cannot_step_is_a_note_and_exit_1(capsys, monkeypatch):
    def broken(method, device, batch, plan, with_memory, compile_modes):
        raise RuntimeError("the review loss needs snapshots")

    monkeypatch.setattr("tskd_fast.bench.cli.run_method", broken)
    assert main(["bench", "--ops", "steps", "--methods", "kd", "--quick"]) == 1
    out, _ = capsys.readouterr()
    assert "note: step kd cpu: failed: RuntimeError: the review loss needs snapshots" in out


def test_the_step_is_timed_in_the_last_epoch_or_last_review_epoch_after_the_hooks(monkeypatch):
    from types import SimpleNamespace

    from tskd_fast.distillers import Distiller

    assert steps.bench_epoch(SimpleNamespace(), 240) == 239
    reviewing = SimpleNamespace(schedule=SimpleNamespace(review_epochs=lambda n: [15, 35, 55]))
    assert steps.bench_epoch(reviewing, 60) == 55
    assert steps.bench_epoch(SimpleNamespace(schedule=SimpleNamespace(review_epochs=lambda n: [])), 60) == 59

    started, ended = [], []
    monkeypatch.setattr(
        Distiller, "on_epoch_start", lambda self, epoch, epochs: started.append((epoch, epochs))
    )
    monkeypatch.setattr(Distiller, "on_epoch_end", lambda self, epoch: ended.append(epoch))
    steps.build_step("kd", torch.device("cpu"), batch=2)
    epochs = steps.method_config("kd")["solver"]["epochs"]
    assert started == [(e, epochs) for e in range(epochs)] and ended == list(range(epochs - 1))


@pytest.mark.parametrize("same_draws", [True, False])
def test_the_reference_and_auto_steps_of_tst_draw_the_same_augmentations(monkeypatch, same_draws):
    """With same_draws=False (benchmarks/tst_draws.py: how the bench once drew) they differ."""
    from tskd_fast.nn.augment import LearnedAugmentation

    monkeypatch.setattr(steps, "TEACHER", "resnet8")
    monkeypatch.setattr(steps, "STUDENT", "resnet8")
    drawn: list[tuple[int, ...]] = []
    original = LearnedAugmentation.draw

    def recording_draw(self, generator=None):
        draw = original(self, generator)
        drawn.append(draw.chosen)
        return draw

    monkeypatch.setattr(LearnedAugmentation, "draw", recording_draw)
    fns = steps.build_step("tst", torch.device("cpu"), batch=2, same_draws=same_draws)
    for name in ("reference", "reference", "auto", "reference", "auto", "auto"):
        fns[name]()
    reference_draws = [drawn[i] for i in (0, 1, 3)]
    auto_draws = [drawn[i] for i in (2, 4, 5)]
    assert (reference_draws == auto_draws) == same_draws
    assert len(set(reference_draws)) > 1  # the stream moves on from step to step


@pytest.mark.skipif(not _extension.has_cpu_kernels(), reason="tskd_fast._C is not built")
def test_overhead_table_and_json(capsys, tmp_path):
    """`--overhead`: one row per family with its floor, fused and eager host cost (20th percentile,
    the medians in the JSON) and the verdict of the target, computed from those numbers."""
    path = tmp_path / "overhead.json"
    argv = ["bench", "--overhead", "--ops", "kd_loss,dtd", "--device", "cpu", "--repeat", "20"]
    assert main([*argv, "--warmup", "2", "--max-seconds", "2", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "20th percentile" in out and "calling thread's CPU time" in out
    table = [line for line in out.splitlines() if line.startswith(("| kd_loss ", "| dtd "))]
    assert len(table) == 2 and all(" | cpu | cpu | " in line for line in table)
    report = json.loads(path.read_text())
    assert report["machine"]["threads"] == 1
    rows = report["overhead"]
    assert [r["op"] for r in rows] == ["kd_loss", "dtd"]
    for r in rows:
        assert r["statistic"] == "p20"
        for what in ("floor", "fused", "eager"):
            assert 0 < r[f"{what}_us"] <= r[f"{what}_median_us"] * 1.0001
        assert r["fused_vs_floor"] == pytest.approx(r["fused_us"] / r["floor_us"], rel=1e-2)
        assert r["met"] == (r["fused_us"] <= 1.5 * r["floor_us"] and r["fused_us"] < r["eager_us"])


def test_overhead_verdict():
    from tskd_fast.bench.overhead import OverheadRow

    def row(floor, fused, eager):
        return OverheadRow("kd_loss", "8x10", "cpu", "cpu", floor, fused, eager, floor, fused, eager)

    assert row(20.0, 30.0, 100.0).met  # exactly 1.5x the floor
    assert not row(20.0, 30.2, 100.0).met
    assert not row(20.0, 25.0, 24.0).met  # slower than eager


def test_compiled_steps_are_timed_beside_the_eager_ones_in_one_run(monkeypatch):
    """--step-compile adds a row per mode: the step compiled as the trainer compiles it, once per
    backend (the backend is read while tracing). Traced here with a counting backend, not inductor."""
    import functools

    from torch._dynamo.testing import CompileCounter

    from tskd_fast.engine import compile as engine_compile

    counter = CompileCounter()
    monkeypatch.setattr(
        engine_compile, "CompiledStep", functools.partial(engine_compile.CompiledStep, backend=counter)
    )
    monkeypatch.setattr(steps, "TEACHER", "resnet8")
    monkeypatch.setattr(steps, "STUDENT", "resnet8")
    torch._dynamo.reset()
    plan = Plan(warmup=1, repeat=3, min_repeat=3)
    eager, compiled = steps.run_method(
        "kd", torch.device("cpu"), 2, plan, with_memory=False, compile_modes=["default"]
    )
    torch._dynamo.reset()
    assert (eager.mode, compiled.mode) == ("eager", "default")
    assert counter.frame_count == 2  # one graph with the reference ops, one with the fused ones
    assert (compiled.graphs_reference, compiled.graphs_auto) == (1, 1)
    assert (compiled.graph_breaks_reference, compiled.graph_breaks_auto) == (0, 0)
    assert eager.graph_breaks_auto is None
    assert compiled.compile_s > 0 and compiled.reference_ms > 0 and compiled.auto_ms > 0
    assert compiled.distill_share_auto is None and eager.distill_share_auto is not None
    with pytest.raises(ValueError, match="compile mode"):
        steps.build_step("kd", torch.device("cpu"), 2, compile_modes=["false"])
    with pytest.raises(UserError, match="--step-compile"):
        from tskd_fast.bench.cli import _step_modes, build_parser

        _step_modes(build_parser().parse_args(["--step-compile", "fast"]))


def test_graph_breaks_and_graphs_are_counted():
    def broken(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    def whole(x):
        return (x + 1) * 2

    torch._dynamo.reset()
    x = torch.ones(3)
    with steps.counting_graphs() as counted:
        torch.compile(broken, backend="eager")(x)
    assert counted == {"breaks": 1, "graphs": 2}
    with steps.counting_graphs() as counted:
        torch.compile(whole, backend="eager")(x)
    assert counted == {"breaks": 0, "graphs": 1}
    torch._dynamo.reset()


def test_step_plan_defaults_and_the_options_that_override_them():
    from tskd_fast.bench.cli import _plans, build_parser

    for quick in (False, True):
        argv = ["--quick"] if quick else []
        assert _plans(build_parser().parse_args(argv))[1] == steps.step_plan(quick)
    plan = _plans(build_parser().parse_args(["--repeat", "30", "--max-seconds", "420", "--warmup", "4"]))[1]
    assert (plan.repeat, plan.max_seconds, plan.warmup) == (30, 420.0, 4)
    assert plan.min_repeat == steps.step_plan(False).min_repeat
