"""The bench's outputs on made-up rows: tables, slowdowns, issue targets, CSV and the SVG chart."""

import csv
import dataclasses
import sys
import xml.etree.ElementTree as ET

import pytest

from tskd_fast.bench import report
from tskd_fast.bench.cases import FAMILIES, Target
from tskd_fast.bench.runner import Result
from tskd_fast.bench.steps import StepResult


def _row(backend, kind, median, eager, compile_, share=0.5, op="kd_loss", shape="4096x1000"):
    return Result(op, shape, "float32", "cpu", backend, kind, median, median * 0.9, median * 1.1, 10,
                  eager / median, compile_ / median, 3.0, share, 12.5, 6.0)  # fmt: skip


def _step():
    return StepResult("kd", "cpu", 64, 200.0, 190.0, 210.0, 100.0, 95.0, 105.0, 40.0, 50.0, 2.0, 0.55, 0.1,
                      0.5, 300.0, 250.0)  # fmt: skip


def test_tables_show_medians_ranges_ratios_and_shares():
    rows = [_row("cpu", "fused", 2.0, 20.0, 8.0), _row("eager", "baseline", 20.0, 20.0, 8.0)]
    table = report.op_table(rows).splitlines()
    assert len(table) == 4
    assert table[2] == (
        "| kd_loss | 4096x1000 | float32 | cpu | cpu | 2.000 (1.800-2.200) | 10.00x | 4.00x | 3.0 | 6.0 | 50% | 12.5 |"
    )
    compiled = StepResult("kd", "cpu", 64, 150.0, 140.0, 160.0, 90.0, 85.0, 95.0, 40.0, 50.0, 1.667, None, None,
                          None, 310.0, 260.0, mode="default", compile_s=61.4, graph_breaks_reference=0,
                          graph_breaks_auto=2, graphs_reference=1, graphs_auto=3, paired_speedup=1.6,
                          paired_speedup_p20=1.55, paired_speedup_p80=1.7)  # fmt: skip
    steps = report.step_table([_step(), compiled]).splitlines()
    assert steps[2] == (
        "| kd | cpu | eager | 64 | 200.0 (190.0-210.0) | 100.0 (95.000-105.0) | 2.00x |  | 55% / 10% | 50% | 300 / 250 |  |  |"
    )
    assert steps[3] == (
        "| kd | cpu | default | 64 | 150.0 (140.0-160.0) | 90.000 (85.000-95.000) | 1.67x | 1.60x (1.55-1.70) |  |  | 310 / 260 | 61 | 0 / 2 |"
    )


def test_slower_fused_rows_are_listed():
    rows = [_row("cpu", "fused", 10.0, 20.0, 8.0), _row("eager", "baseline", 20.0, 20.0, 8.0)]
    assert report.slower_than_a_baseline(rows) == ["kd_loss 4096x1000 float32 cpu cpu: 0.80x vs compile"]
    assert report.slower_than_a_baseline(rows[1:]) == []


def test_issue_targets_are_met_or_their_gap_named():
    families = {
        "kd_loss": dataclasses.replace(
            FAMILIES["kd_loss"], targets=(Target(8, 3, 0.5, "4096x1000", "issue 1"),)
        )
    }
    met = report.target_lines([_row("cpu", "fused", 2.0, 20.0, 8.0, share=0.6)], families)
    assert met == [
        "kd_loss 4096x1000 cpu [issue 1]: met: vs eager 10.00x (target 8x), vs compile 4.00x (target 3x), "
        "copy BW 60% (target 50%)"
    ]
    missed = report.target_lines([_row("cpu", "fused", 4.0, 20.0, 8.0, share=0.3)], families)
    assert missed[0].startswith("kd_loss 4096x1000 cpu [issue 1]: missed: vs eager 5.00x (target 8x) MISSED")
    assert "copy BW 30% (target 50%) MISSED" in missed[0]
    other_shape = _row("cpu", "fused", 4.0, 20.0, 8.0, shape="128x100")
    assert report.target_lines([other_shape, _row("eager", "baseline", 20.0, 20.0, 8.0)], families) == []


def test_csv_of_ops_and_steps(tmp_path):
    path = tmp_path / "out.csv"
    report.write_csv(str(path), [_row("cpu", "fused", 2.0, 20.0, 8.0)], [_step()])
    with open(path) as f:
        (row,) = list(csv.DictReader(f))
    assert row["backend"] == "cpu" and float(row["speedup_eager"]) == 10.0
    with open(tmp_path / "out_steps.csv") as f:
        (step,) = list(csv.DictReader(f))
    assert step["method"] == "kd" and float(step["speedup"]) == 2.0


def test_svg_chart_has_a_bar_per_fused_row_and_baseline(tmp_path):
    rows = [
        _row("cpu", "fused", 2.0, 20.0, 8.0),
        _row("cpu", "fused", 10.0, 20.0, 8.0, shape="128x100"),
        _row("eager", "baseline", 20.0, 20.0, 8.0),
    ]
    path = tmp_path / "chart.svg"
    report.write_plot(str(path), rows, "speed-ups & <title>")
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "speed-ups & <title>" in texts
    assert {"kd_loss 4096x1000 float32 cpu/cpu", "kd_loss 128x100 float32 cpu/cpu"} <= set(texts)
    assert {"10.00x", "4.00x", "2.00x", "0.80x"} <= set(texts)
    assert len([r for r in root.iter(f"{ns}rect")]) == 2 + 4  # legend + two bars per fused row


def test_non_svg_chart_needs_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report.check_plot_path("chart.svg")
    with pytest.raises(report.PlotUnavailable, match="needs matplotlib, which is not installed"):
        report.check_plot_path("chart.png")


def test_targets_against_named_baselines_time_and_peak_memory():
    """A target may name further baselines to be at least as fast as, and peak-memory shares."""
    families = {
        "kd_loss": dataclasses.replace(
            FAMILIES["kd_loss"],
            targets=(Target(1.0, None, shape="4096x1000", source="issue 18", faster_than=("liger",),
                            peak_share=(("eager", 0.1), ("liger", 0.5))),),
        )
    }  # fmt: skip
    fused = dataclasses.replace(_row("cpu", "fused", 2.0, 20.0, 8.0), peak_mib=10.0)
    eager = dataclasses.replace(_row("eager", "baseline", 20.0, 20.0, 8.0), peak_mib=200.0)
    liger = dataclasses.replace(_row("liger", "baseline", 3.0, 20.0, 8.0), peak_mib=15.0)
    (line,) = report.target_lines([fused, eager, liger], families)
    assert line == (
        "kd_loss 4096x1000 cpu [issue 18]: missed: vs eager 10.00x (target 1x), vs liger 1.50x (target 1x), "
        "peak vs eager 0.050x (target <= 0.1x), peak vs liger 0.667x (target <= 0.5x) MISSED"
    )
    (line,) = report.target_lines([fused, eager], families)
    assert "vs liger not measured" in line and "peak vs liger not measured" in line


def test_tflops_lines_name_the_share_of_the_bf16_peak():
    row = dataclasses.replace(
        _row("cuda", "fused", 2.0, 20.0, 8.0, op="fused_linear_kd"),
        device="cuda",
        dtype="bfloat16",
        tflops=593.6,
    )
    assert report.tflops_lines([row, _row("eager", "baseline", 20.0, 20.0, 8.0)], "NVIDIA H200") == [
        "fused_linear_kd 4096x1000 bfloat16 cuda cuda: 593.60 TFLOPS (60% of the 989.4 TFLOPS bf16 peak), "
        "incremental peak 12 MiB"
    ]
