"""scripts/gpu_check.sh (make gpu-check) without a GPU: it says so and stops within seconds; and its
parts that need no GPU: the pytest plugin (time budget, streamed results), the summary (per-backend
counts, bandwidth shares from the bench's JSON, verdict)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_check  # noqa: E402


def test_without_a_gpu_it_says_so_and_exits_nonzero_within_seconds(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    env.pop("TRITON_INTERPRET", None)
    command = ["make", "-s", "gpu-check"] if shutil.which("make") else ["bash", "scripts/gpu_check.sh"]
    start = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert done.returncode != 0
    if command[0] == "bash":
        assert done.returncode == 2
    assert "gpu-check: no CUDA GPU visible to" in done.stdout, done.stdout + done.stderr
    assert "torch.cuda.is_available() is False" in done.stdout
    assert took < 60, f"took {took:.0f} s"
    out = tmp_path / "out"
    assert "no CUDA GPU visible" in (out / "gpu-check.log").read_text()
    assert json.loads((out / "probe.json").read_text())["gpu"] is False
    assert not (out / "build.log").exists() and not (out / "junit.xml").exists()


def test_pyproject_license_is_readable_by_distribution_setuptools():
    """A GPU machine's system python may have setuptools < 77 (Ubuntu 24.04 ships 68), which
    rejects `license = "MIT"` and so fails the in-place build: the table form works on both."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}


# ---------------------------------------------------------------------------------------------
# The pytest plugin

_TESTS = """
import time

def test_first():
    time.sleep(0.2)

def test_second():
    assert False, "second fails"

def test_third():
    pass
"""


def _run_plugin(tmp_path, deadline):
    (tmp_path / "test_sample.py").write_text(_TESTS)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")]),
        GPU_CHECK_DEADLINE=str(deadline),
        GPU_CHECK_RESULTS=str(tmp_path / "test-results.jsonl"),
    )
    args = ["-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path)]
    args += ["-p", "gpu_check_pytest_plugin", f"--junitxml={tmp_path / 'junit.xml'}", "test_sample.py"]
    subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=tmp_path, env=env, capture_output=True, timeout=120
    )
    return gpu_check.test_results(tmp_path)


def test_plugin_stops_at_the_deadline_and_the_report_is_still_written(tmp_path):
    results, source = _run_plugin(tmp_path, time.time() - 1)
    assert source == "JUnit report"
    assert [(name.split("::")[-1], outcome) for name, outcome, _ in results] == [("test_first", "passed")]


def test_plugin_streams_every_outcome(tmp_path):
    results, _ = _run_plugin(tmp_path, time.time() + 600)
    assert [outcome for _, outcome, _ in results] == ["passed", "failed", "passed"]
    (tmp_path / "junit.xml").unlink()  # as if pytest had been killed: the streamed lines count
    streamed, source = gpu_check.test_results(tmp_path)
    assert source.startswith("streamed results")
    assert [(name.split("::")[-1], outcome) for name, outcome, _ in streamed] == [
        ("test_first", "passed"),
        ("test_second", "failed"),
        ("test_third", "passed"),
    ]
    assert "second fails" in streamed[1][2]


# ---------------------------------------------------------------------------------------------
# The summary


@pytest.mark.parametrize(
    "name,backend",
    [
        ("tests.test_dtd::test_weights_match_reference[float32-1-1-none-flsw-cuda]", "cuda"),
        ("tests.test_x::test_y[triton-cpu]", "triton"),
        ("tests.test_x::test_y[reference]", "reference"),
        ("tests.test_x::test_y[cpu-float64]", "cpu"),
        ("tests.test_x::test_y[cudagraph]", "other"),
        ("tests.test_x::test_y", "other"),
    ],
)
def test_backend_of_a_test(name, backend):
    assert gpu_check.backend_of(name) == backend


def _junit(cases):
    body = []
    for name, outcome in cases:
        inner = {"passed": "", "failed": '<failure message="AssertionError: boom">x</failure>'}.get(outcome)
        if inner is None:
            inner = {"skipped": '<skipped message="no GPU"/>', "error": '<error message="fixture">e</error>'}[
                outcome
            ]
        body.append(f'<testcase classname="tests.test_k" name="{name}" time="0.1">{inner}</testcase>')
    return (
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(body)}</testsuite></testsuites>'
    )


def _bench_rows():
    """What `python3 -m tskd_fast.bench --json` writes (tskd_fast.bench.report.write_json)."""
    fused = {
        "op": "kd_loss",
        "shape": "4096x128256",
        "dtype": "bfloat16",
        "device": "cuda",
        "backend": "cuda",
        "kind": "fused",
        "median_ms": 0.95,
        "p20_ms": 0.94,
        "p80_ms": 0.97,
        "samples": 10,
        "speedup_eager": 9.5,
        "speedup_compile": 3.1,
        "gbps": 3318.0,
        "bw_share": 0.8295,
        "peak_mib": 4000.0,
    }
    eager = dict(
        fused,
        backend="eager",
        kind="eager",
        median_ms=9.0,
        speedup_eager=None,
        speedup_compile=None,
        gbps=350.0,
        bw_share=0.0875,
    )
    step = {
        "method": "kd",
        "device": "cuda",
        "batch": 8,
        "reference_ms": 12.0,
        "auto_ms": 10.0,
        "speedup": 1.2,
    }
    return {
        "machine": {"gpu": "NVIDIA H200", "copy_gbps_cuda": 4000.0, "copy_gbps_cuda_runs": [3990.0, 4000.0]},
        "ops": [fused, eager],
        "steps": [step],
        "notes": ["hcl: not available in this build"],
    }  # fmt: skip


def _overhead_rows():
    """What `python3 -m tskd_fast.bench --overhead --json` writes (report.write_overhead_json)."""
    row = {
        "op": "kd_loss",
        "shape": "8x10",
        "device": "cuda",
        "backend": "cuda",
        "floor_us": 40.0,
        "fused_us": 52.0,
        "eager_us": 240.0,
        "fused_vs_floor": 1.3,
        "eager_vs_floor": 6.0,
        "met": True,
    }
    return {"machine": {"gpu": "NVIDIA H200"}, "overhead": [row]}


def test_summary_counts_per_backend_and_shows_bandwidth_shares(tmp_path, capsys):
    cases = [("test_a[cuda]", "passed"), ("test_a[triton]", "passed"), ("test_a[triton-x]", "skipped")]
    cases += [("test_b[cpu]", "passed"), ("test_c", "passed"), ("test_d[reference]", "passed")]
    (tmp_path / "junit.xml").write_text(_junit(cases))
    (tmp_path / "bench.json").write_text(json.dumps(_bench_rows()))
    (tmp_path / "overhead.json").write_text(json.dumps(_overhead_rows()))
    (tmp_path / "phases.tsv").write_text("build\tok\t61\t\ntests\tok\t200\t\nbench\tok\t90\t\n")
    (tmp_path / "probe.json").write_text(
        json.dumps({"gpu_name": "NVIDIA H200", "arch": "9.0", "has_pytest": True})
    )
    assert gpu_check.summary(tmp_path) == 0
    text = capsys.readouterr().out
    lines = {
        line.split()[0]: line.split()[1:]
        for line in text.splitlines()
        if line.startswith("  ") and line.split()
    }
    assert lines["cuda"] == ["1", "0", "0", "0"]
    assert lines["triton"] == ["1", "0", "0", "1"]
    assert lines["cpu"] == ["1", "0", "0", "0"] and lines["reference"] == ["1", "0", "0", "0"]
    assert lines["other"] == ["1", "0", "0", "0"] and lines["total"] == ["5", "0", "0", "1"]
    assert "cuda: copy 4000 GB/s" in text
    assert "4096x128256" in text and "3318.0" in text and "83%" in text and "9.50x" in text
    assert "350.0" not in text  # the baselines' own rows are not listed, only their ratios
    assert "step kd" in text and "1.20x" in text and "note: hcl: not available in this build" in text
    assert lines["kd_loss"][-5:] == ["52.0", "1.30x", "240.0", "6.00x", "met"]
    assert "verdict: PASS" in text and (tmp_path / "summary.txt").read_text() == text


def test_summary_fails_on_failures_timeouts_and_a_missing_pytest(tmp_path, capsys):
    (tmp_path / "junit.xml").write_text(_junit([("test_a[cuda]", "failed"), ("test_b[cpu]", "error")]))
    (tmp_path / "phases.tsv").write_text("build\tok\t61\t\ntests\ttimeout\t300\tkilled after 300 s\n")
    assert gpu_check.summary(tmp_path) == 1
    text = capsys.readouterr().out
    assert "tests.test_k::test_a[cuda]: AssertionError: boom" in text and "verdict: FAIL" in text
    (tmp_path / "phases.tsv").write_text("build\tok\t61\t\n")
    (tmp_path / "junit.xml").unlink()
    (tmp_path / "probe.json").write_text(json.dumps({"has_pytest": False}))
    (tmp_path / "bench.json").write_text(json.dumps(_bench_rows()))
    assert gpu_check.summary(tmp_path) == 1
    assert "pytest is NOT installed" in capsys.readouterr().out


def test_summary_lists_the_step_timings_and_the_cuda_graph_checks(tmp_path, capsys):
    cases = [
        ("test_whole_training_step_captures_without_a_sync[kd]", "passed"),
        ("test_whole_training_step_captures_without_a_sync[tst]", "failed"),
    ]
    body = _junit(cases).replace('classname="tests.test_k"', 'classname="tests.test_cuda_graphs"')
    (tmp_path / "junit.xml").write_text(body)
    (tmp_path / "bench.json").write_text(json.dumps(_bench_rows()))
    eager = {
        "method": "kd",
        "device": "cuda",
        "batch": 64,
        "reference_ms": 9.0,
        "auto_ms": 8.0,
        "speedup": 1.125,
    }
    rows = [
        dict(eager, mode="eager", compile_s=None),
        dict(eager, mode="default", reference_ms=6.0, auto_ms=5.0, speedup=1.2, compile_s=31.0),
        dict(
            eager,
            mode="reduce-overhead",
            reference_ms=3.0,
            auto_ms=2.0,
            speedup=1.5,
            compile_s=35.0,
            graph_breaks_reference=0,
            graph_breaks_auto=0,
            paired_speedup=1.46,
        ),
    ]
    (tmp_path / "steps-kd.json").write_text(json.dumps({"steps": rows, "notes": []}))
    (tmp_path / "steps-tst.json").write_text(
        json.dumps({"steps": [], "notes": ["step tst cuda: failed: boom"]})
    )
    (tmp_path / "phases.tsv").write_text(
        "tests\tok\t200\t\nbench\tok\t90\t\nsteps-kd\tok\t100\t\ntst-draws\tok\t40\t\n"
    )
    (tmp_path / "tst-draws.log").write_text(
        "tst step, batch 8, cuda: ratio reference / fused, quick plan, 5 trials\n"
        "  shared draws: 0.40x 2.10x  (range 0.40x-2.10x)\n"
        "  same draws  : 1.01x 0.99x  (range 0.99x-1.01x)\n"
    )
    assert gpu_check.summary(tmp_path) == 1  # a failed capture test, and a method without a step row
    text = capsys.readouterr().out
    assert "CUDA-graph capture and host-sync checks (tests/test_cuda_graphs.py): 1 passed, 1 failed" in text
    assert (
        "step kd        cuda reduce-overhead batch 64 : reference 3.0 ms, auto 2.0 ms (1.50x, paired 1.46x), "
        "compiled in 35 s, "
        "graph breaks 0 / 0" in text
    )
    assert "step kd        cuda eager" in text and "note: step tst cuda: failed: boom" in text
    assert "  shared draws: 0.40x 2.10x  (range 0.40x-2.10x)" in text
