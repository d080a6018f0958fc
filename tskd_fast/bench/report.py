"""The bench's outputs: the printed tables, CSV, JSON and a chart of the speed-ups."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from html import escape

from tskd_fast.bench.cases import Family
from tskd_fast.bench.runner import Result
from tskd_fast.bench.steps import StepResult


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def op_table(rows: Sequence[Result]) -> str:
    """A markdown table of the op rows (also readable as plain text)."""
    head = (
        "| op | shape | dtype | device | backend | median ms (p20-p80) | vs eager | vs compile "
        "| GB/s | copy GB/s | % copy BW | peak MiB |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        share = "" if r.bw_share is None else f"{100 * r.bw_share:.0f}%"
        copy = "" if r.copy_gbps is None else f"{r.copy_gbps:.1f}"
        peak = "" if r.peak_mib is None else f"{r.peak_mib:.1f}"
        lines.append(
            f"| {r.op} | {r.shape} | {r.dtype} | {r.device} | {r.backend} | "
            f"{_ms(r.median_ms)} ({_ms(r.p20_ms)}-{_ms(r.p80_ms)}) | {_ratio(r.speedup_eager)} | "
            f"{_ratio(r.speedup_compile)} | {r.gbps:.1f} | {copy} | {share} | {peak} |"
        )
    return "\n".join(lines)


def step_table(rows: Sequence[StepResult]) -> str:
    """A markdown table of the whole-step rows (one per method, device and mode)."""
    head = (
        "| method | device | mode | batch | step ms reference (p20-p80) | step ms auto (p20-p80) | speed-up "
        "| paired speed-up (p20-p80) | distillation share ref / auto | teacher share | peak MiB ref / auto "
        "| compile s | graph breaks ref / auto |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        peaks = (
            ""
            if r.peak_mib_reference is None or r.peak_mib_auto is None
            else f"{r.peak_mib_reference:.0f} / {r.peak_mib_auto:.0f}"
        )
        shares = (
            ""
            if r.distill_share_reference is None or r.distill_share_auto is None
            else f"{100 * r.distill_share_reference:.0f}% / {100 * r.distill_share_auto:.0f}%"
        )
        teacher = "" if r.teacher_share is None else f"{100 * r.teacher_share:.0f}%"
        compiled = "" if r.compile_s is None else f"{r.compile_s:.0f}"
        breaks = (
            ""
            if r.graph_breaks_reference is None or r.graph_breaks_auto is None
            else f"{r.graph_breaks_reference} / {r.graph_breaks_auto}"
        )
        paired = (
            ""
            if r.paired_speedup is None
            else f"{r.paired_speedup:.2f}x ({r.paired_speedup_p20:.2f}-{r.paired_speedup_p80:.2f})"
        )
        lines.append(
            f"| {r.method} | {r.device} | {r.mode} | {r.batch} | {_ms(r.reference_ms)} ({_ms(r.reference_p20_ms)}-"
            f"{_ms(r.reference_p80_ms)}) | {_ms(r.auto_ms)} ({_ms(r.auto_p20_ms)}-{_ms(r.auto_p80_ms)}) | "
            f"{r.speedup:.2f}x | {paired} | {shares} | {teacher} | {peaks} | {compiled} | {breaks} |"
        )
    return "\n".join(lines)


def slower_than_a_baseline(rows: Sequence[Result]) -> list[str]:
    """Fused rows slower than the eager or compiled reference of the same case."""
    found = []
    for r in rows:
        if r.kind != "fused":
            continue
        for name, ratio in (("eager", r.speedup_eager), ("compile", r.speedup_compile)):
            if ratio is not None and ratio < 1.0:
                found.append(f"{r.op} {r.shape} {r.dtype} {r.device} {r.backend}: {ratio:.2f}x vs {name}")
    return found


def _case_row(rows: Sequence[Result], r: Result, backend: str) -> Result | None:
    """The row of `backend` in the case of r (same op, shape, dtype and device)."""
    for other in rows:
        if (other.op, other.shape, other.dtype, other.device, other.backend) == (
            r.op,
            r.shape,
            r.dtype,
            r.device,
            backend,
        ):
            return other
    return None


def _target_checks(rows: Sequence[Result], r: Result, t) -> list[tuple[str, float | None, float, str]]:
    """(name, measured, wanted, unit) of each check of target t on the fused row r; measured is
    None when not measured. Units: "x" at least, "%" at least, "peak" at most."""
    checks = []
    if t.vs_eager is not None:
        checks.append(("vs eager", r.speedup_eager, t.vs_eager, "x"))
    if t.vs_compile is not None:
        checks.append(("vs compile", r.speedup_compile, t.vs_compile, "x"))
    if t.bw_share is not None:
        checks.append(("copy BW", r.bw_share, t.bw_share, "%"))
    for name in t.faster_than:
        base = _case_row(rows, r, name)
        checks.append((f"vs {name}", base.median_ms / r.median_ms if base else None, 1.0, "x"))
    for name, share in t.peak_share:
        base = _case_row(rows, r, name)
        got = r.peak_mib / base.peak_mib if base and base.peak_mib and r.peak_mib is not None else None
        checks.append((f"peak vs {name}", got, share, "peak"))
    return checks


def target_lines(rows: Sequence[Result], families: Mapping[str, Family]) -> list[str]:
    """Each issue target against the fused CPU float32 rows it covers: met, or what is missing."""
    lines = []
    for r in rows:
        if r.kind != "fused" or r.device != "cpu" or r.dtype != "float32" or r.op not in families:
            continue
        for t in families[r.op].targets:
            if t.shape is not None and t.shape != r.shape:
                continue
            parts, missed = [], False
            for name, got, want, unit in _target_checks(rows, r, t):
                if got is None:
                    parts.append(f"{name} not measured")
                    continue
                ok = got <= want if unit == "peak" else got >= want
                missed |= not ok
                if unit == "%":
                    shown = f"{100 * got:.0f}% (target {100 * want:.0f}%)"
                elif unit == "peak":
                    shown = f"{got:.3f}x (target <= {want:g}x)"
                else:
                    shown = f"{got:.2f}x (target {want:g}x)"
                parts.append(f"{name} {shown}{'' if ok else ' MISSED'}")
            verdict = "missed" if missed else "met"
            lines.append(f"{r.op} {r.shape} {r.backend} [{t.source}]: {verdict}: " + ", ".join(parts))
    return lines


# Dense bfloat16 tensor-core peaks (TFLOPS) of the GPUs the bench names a share of peak for.
BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 PCIe": 756.0,
    "A100": 312.0,
}


def bf16_peak_tflops(gpu_name: str | None) -> float | None:
    """The GPU's dense bf16 peak from its name, None when unknown."""
    for key, value in BF16_PEAK_TFLOPS.items():
        if gpu_name and key in gpu_name:
            return value
    return None


def tflops_lines(rows: Sequence[Result], gpu_name: str | None = None) -> list[str]:
    """TFLOPS of the rows of matmul-bound ops (those with a FLOP model); on CUDA bf16 rows also as
    a share of the GPU's bf16 peak."""
    peak = bf16_peak_tflops(gpu_name)
    lines = []
    for r in rows:
        if r.tflops is None:
            continue
        share = ""
        if r.device == "cuda" and r.dtype == "bfloat16" and peak:
            share = f" ({100 * r.tflops / peak:.0f}% of the {peak:g} TFLOPS bf16 peak)"
        peak_mib = "" if r.peak_mib is None else f", incremental peak {r.peak_mib:.0f} MiB"
        rate = f"{r.tflops:.2f} TFLOPS" if r.tflops >= 1 else f"{1000 * r.tflops:.1f} GFLOPS"
        lines.append(f"{r.op} {r.shape} {r.dtype} {r.device} {r.backend}: {rate}{share}{peak_mib}")
    return lines


def write_csv(path: str, rows: Sequence[Result], steps: Sequence[StepResult]) -> None:
    """The op rows; the step rows (if any) go to a second file, <path stem>_steps.csv."""
    _write_dataclass_csv(path, rows, Result)
    if steps:
        stem, ext = os.path.splitext(path)
        _write_dataclass_csv(f"{stem}_steps{ext or '.csv'}", steps, StepResult)


def _write_dataclass_csv(path: str, rows: Sequence, cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))


def write_json(
    path: str, machine: dict, rows: Sequence[Result], steps: Sequence[StepResult], notes: Sequence[str]
) -> None:
    doc = {
        "machine": machine,
        "ops": [dataclasses.asdict(r) for r in rows],
        "steps": [dataclasses.asdict(s) for s in steps],
        "notes": list(notes),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def write_overhead_json(path: str, machine: dict, rows: Sequence[dict]) -> None:
    """`tskd-fast bench --overhead --json PATH`: the machine and the host-cost rows."""
    with open(path, "w") as f:
        json.dump({"machine": machine, "overhead": list(rows)}, f, indent=2)
        f.write("\n")


class PlotUnavailable(RuntimeError):
    """--plot was given a format that needs matplotlib, which is not installed."""


def check_plot_path(path: str) -> None:
    """Fail before any measurement when the chart could not be written at the end."""
    if path.lower().endswith(".svg"):
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            f"--plot {path}: writing this format needs matplotlib, which is not installed "
            "(pip install matplotlib), or give a .svg path, which is written without it"
        ) from None


def _bars(rows: Sequence[Result]) -> list[tuple[str, float | None, float | None]]:
    """(label, speed-up vs eager, speed-up vs compile) per fused row."""
    return [
        (f"{r.op} {r.shape} {r.dtype} {r.device}/{r.backend}", r.speedup_eager, r.speedup_compile)
        for r in rows
        if r.kind == "fused"
    ]


def write_plot(path: str, rows: Sequence[Result], title: str) -> None:
    """Horizontal bars of each fused row's speed-up over eager and over torch.compile, on a log
    scale with the 1x line marked: a bar left of the line is a slowdown."""
    bars = _bars(rows)
    if path.lower().endswith(".svg"):
        with open(path, "w") as f:
            f.write(svg_chart(bars, title))
        return
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 1.0 + 0.32 * max(1, len(bars))
    fig, ax = plt.subplots(figsize=(10, height))
    ys = range(len(bars))
    for offset, index, name, color in (
        (-0.2, 1, "vs eager", "#4c72b0"),
        (0.2, 2, "vs torch.compile", "#dd8452"),
    ):
        values = [b[index] or math.nan for b in bars]
        ax.barh([y + offset for y in ys], values, height=0.4, label=name, color=color)
    ax.set_yticks(list(ys), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speed-up of the fused op (x, log scale; > 1 is faster)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def svg_chart(bars: Sequence[tuple[str, float | None, float | None]], title: str) -> str:
    """The chart of write_plot as a self-contained SVG document (no plotting library needed)."""
    label_w, plot_w, row_h, top = 330, 460, 26, 50
    values = [v for _, a, b in bars for v in (a, b) if v]
    low = min([0.5, *values])
    high = max([2.0, *values])
    lo, hi = math.log10(low) - 0.05, math.log10(high) + 0.05

    def x_of(v: float) -> float:
        return label_w + plot_w * (math.log10(v) - lo) / (hi - lo)

    height = top + row_h * len(bars) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="10" y="18" font-size="14">{escape(title)}</text>',
        f'<rect x="{label_w}" y="26" width="10" height="10" fill="#4c72b0"/>'
        f'<text x="{label_w + 14}" y="35">vs eager</text>',
        f'<rect x="{label_w + 90}" y="26" width="10" height="10" fill="#dd8452"/>'
        f'<text x="{label_w + 104}" y="35">vs torch.compile (log scale, &gt; 1 is faster)</text>',
    ]
    one = x_of(1.0)
    for i, (label, vs_eager, vs_compile) in enumerate(bars):
        y = top + i * row_h
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        for j, (value, color) in enumerate(((vs_eager, "#4c72b0"), (vs_compile, "#dd8452"))):
            if not value:
                continue
            x0, x1 = sorted((one, x_of(value)))
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 2 + 11 * j}" width="{max(x1 - x0, 1):.1f}" height="10" '
                f'fill="{color}"/><text x="{max(x_of(value), one) + 3:.1f}" y="{y + 11 + 11 * j}" '
                f'font-size="9">{value:.2f}x</text>'
            )
    bottom = top + row_h * len(bars)
    out.append(f'<line x1="{one:.1f}" y1="{top - 4}" x2="{one:.1f}" y2="{bottom}" stroke="black"/>')
    tick = 10 ** math.floor(lo)
    while tick <= 10**hi:
        for m in (1, 2, 5):
            v = tick * m
            if lo <= math.log10(v) <= hi:
                out.append(f'<text x="{x_of(v):.1f}" y="{bottom + 16}" text-anchor="middle">{v:g}x</text>')
        tick *= 10
    out.append("</svg>")
    return "\n".join(out) + "\n"
