"""``tskd-fast compare``: every method against the student alone, on the same data and seed.

From one config (default: the embedded default run) it plans the runs of ``train`` for each
method with ``experiment.baseline`` on: the teacher (trained once, or ``teacher.checkpoint``), one
student per method (``<output_dir>/<method>``, each method with its own defaults) and the student
alone (``<output_dir>/baseline``). Runs shared between methods run once, and every run is started,
resumed or reused exactly as ``train`` would (the default layout is ``train``'s own, so the
runs of ``tskd-fast train`` are reused). Then it prints a table (test top-1, gain over the student
alone, wall time per epoch, peak memory) and writes it as ``compare.md`` and ``compare.json`` with
a bar chart ``compare.png`` in the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tskd_fast.data import DataSplits, build_data
from tskd_fast.distillers import get_method, methods
from tskd_fast.engine import checkpoint as ckpt
from tskd_fast.engine.config import load_config
from tskd_fast.engine.distributed import DistContext, init_distributed, shutdown_distributed
from tskd_fast.engine.logs import say
from tskd_fast.engine.pipeline import Stage, plan_stages, run_stage
from tskd_fast.engine.run_state import RunResult
from tskd_fast.errors import UserError
from tskd_fast.plot import Bar, bar_chart


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tskd-fast compare``."""
    parser.add_argument(
        "items",
        nargs="*",
        metavar="METHOD | KEY=VALUE",
        help="methods to compare (default: every method but vanilla) and config overrides, e.g. "
        "kd tskd solver.epochs=4",
    )
    parser.add_argument(
        "--config", "-c", metavar="YAML", help="base config (default: the embedded default run)"
    )
    parser.add_argument(
        "--output-dir", "-o", metavar="DIR", help="folder of the runs (experiment.output_dir)"
    )
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs")
    parser.add_argument("--overwrite", action="store_true", help="retrain runs found in the output folder")
    parser.add_argument(
        "--chart-backend",
        default="auto",
        choices=("auto", "matplotlib", "builtin"),
        help="how the bar chart is drawn (auto: matplotlib when installed)",
    )


@dataclass
class CompareRow:
    """One line of the table: a run and its gain over the student alone (points of top-1)."""

    label: str
    method: str
    model: str
    top1: float | None
    gain: float | None
    seconds_per_epoch: float | None
    peak_memory_mib: float | None
    reused: bool
    run_dir: str


def split_items(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(method names, key=value overrides) of the positional arguments."""
    names = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    for text in overrides:
        if text.split("=", 1)[0].strip() in ("distiller.name", "experiment.baseline"):
            raise UserError(
                f"{text!r}: compare sets distiller.name and experiment.baseline per run; list methods instead"
            )
    return names, overrides


def chosen_methods(names: Sequence[str]) -> list[str]:
    """The methods to compare: ``names`` (checked) or every registered method but vanilla."""
    if not names:
        return [name for name in methods() if name != "vanilla"]
    for name in names:
        try:
            get_method(name)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if "vanilla" in names:
        raise UserError("vanilla is the student alone, which compare always trains; leave it out")
    return list(dict.fromkeys(names))


def plan(config: str | None, names: Sequence[str], overrides: Sequence[str]) -> list[tuple[str, Stage]]:
    """(method or role, stage) of every run, each once, in order: teacher, student alone, methods."""
    base = load_config(config, overrides)
    out = base["experiment"]["output_dir"]
    stages: dict[str, tuple[str, Stage]] = {}
    for method in chosen_methods(names):
        cfg = load_config(
            config,
            [
                *overrides,
                f"distiller.name={method}",
                "experiment.baseline=true",
                f"experiment.output_dir={out}",
            ],
        )
        for stage in plan_stages(cfg):
            role = method if stage.key == "main" else stage.key
            stages.setdefault(stage.run_dir, (role, stage))
    order = {"teacher": 0, "baseline": 1}
    return sorted(stages.values(), key=lambda item: order.get(item[0], 2))


def rows_of(results: Sequence[tuple[str, RunResult]]) -> list[CompareRow]:
    """The table rows: teacher, the student alone, then each method with its gain."""
    baseline = next((r.top1 for role, r in results if role == "baseline"), None)
    rows = []
    for role, r in results:
        gain = None
        if role not in ("teacher", "baseline") and r.top1 is not None and baseline is not None:
            gain = r.top1 - baseline
        rows.append(
            CompareRow(
                label={"baseline": "student alone"}.get(role, role),
                method=r.method,
                model=r.model,
                top1=r.top1,
                gain=gain,
                seconds_per_epoch=r.seconds_per_epoch,
                peak_memory_mib=None if r.peak_memory is None else r.peak_memory / 2**20,
                reused=r.reused,
                run_dir=r.run_dir,
            )
        )
    return rows


def format_table(rows: Sequence[CompareRow], memory_kind: str) -> str:
    """The rows as a Markdown table."""

    def num(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    lines = [
        f"| run | model | top-1 % | gain over the student alone | s / epoch | peak memory MiB ({memory_kind}) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        gain = "" if row.gain is None else f"{row.gain:+.2f}"
        lines.append(
            f"| {row.label} | {row.model} | {num(row.top1, '.2f')} | {gain} | "
            f"{num(row.seconds_per_epoch, '.1f')} | {num(row.peak_memory_mib, '.0f')} |"
        )
    return "\n".join(lines)


def write_outputs(out: str, rows: Sequence[CompareRow], title: str, memory_kind: str, backend: str) -> str:
    """compare.md, compare.json and compare.png in ``out``; returns the chart backend used."""
    table = format_table(rows, memory_kind)
    ckpt.atomic_text(f"{title}\n\n{table}\n", os.path.join(out, "compare.md"))
    ckpt.atomic_text(
        json.dumps({"title": title, "memory": memory_kind, "rows": [asdict(r) for r in rows]}, indent=2)
        + "\n",
        os.path.join(out, "compare.json"),
    )
    kinds = {"teacher": "teacher", "student alone": "baseline"}
    bars = [
        Bar(r.label, r.top1, kinds.get(r.label, "method"), "" if r.gain is None else f"{r.gain:+.1f}")
        for r in rows
        if r.top1 is not None
    ]
    reference = next((r.top1 for r in rows if r.label == "student alone"), None)
    return bar_chart(os.path.join(out, "compare.png"), bars, title, reference=reference, backend=backend)


def compare(
    config: str | None,
    names: Sequence[str],
    overrides: Sequence[str],
    ctx: DistContext,
    resume: bool = False,
    overwrite: bool = False,
) -> list[tuple[str, RunResult]]:
    """Run (or reuse) every run of the comparison; (role, result) per run, in plan order."""
    planned = plan(config, names, overrides)
    cache: list[DataSplits] = []

    def get_data() -> DataSplits:
        if not cache:
            cache.append(build_data(planned[0][1].cfg["dataset"], ctx.main_first))
            if ctx.is_main:
                say(f"data: {cache[0].description}")
        return cache[0]

    results = []
    for role, stage in planned:
        result = run_stage(stage, ctx, resume, overwrite, get_data)
        if not result.finished:
            raise UserError(
                f"{stage.label} ({role}) stopped after epoch {result.epochs_done}/{result.epochs} "
                "(trainer.stop_after); continue with --resume"
            )
        results.append((role, result))
    return results


def run_compare(args: argparse.Namespace) -> int:
    """Execute ``compare`` with parsed arguments; raises UserError on bad input."""
    names, overrides = split_items(args.items)
    if args.output_dir:
        overrides.append(f"experiment.output_dir={args.output_dir}")
    base = load_config(args.config, overrides)
    ctx = init_distributed(base["trainer"]["device"])
    try:
        results = compare(args.config, names, overrides, ctx, args.resume, args.overwrite)
    finally:
        shutdown_distributed()
    if ctx.is_main:
        from tskd_fast.engine.peak_memory import PeakMemory

        rows = rows_of(results)
        teacher = base["teacher"]["name"] or "no teacher"
        title = (
            f"{base['dataset']['name']}: {teacher} -> {base['student']['name']}, "
            f"{base['solver']['epochs']} epochs, seed {base['experiment']['seed']}"
        )
        memory_kind = PeakMemory(ctx.device).kind
        backend = write_outputs(
            base["experiment"]["output_dir"], rows, title, memory_kind, args.chart_backend
        )
        say(f"\n{title}\n{format_table(rows, memory_kind)}")
        below = [r.label for r in rows if r.gain is not None and r.gain <= 0]
        if below:
            say(f"not above the student alone: {', '.join(below)}")
        say(
            f"written: compare.md, compare.json, compare.png ({backend}) in {base['experiment']['output_dir']}"
        )
    return 0


__all__ = [
    "CompareRow",
    "add_compare_arguments",
    "chosen_methods",
    "compare",
    "format_table",
    "plan",
    "rows_of",
    "run_compare",
    "split_items",
]
