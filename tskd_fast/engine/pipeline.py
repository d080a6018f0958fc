"""A training job as a sequence of runs: [train the teacher] -> the configured run -> [baseline].

* ``teacher.train: true`` without ``teacher.checkpoint``: the teacher is first trained with
  ``vanilla`` (``solver`` with ``teacher.solver`` overrides) into ``<output_dir>/teacher``; a
  finished teacher of the same config found there is reused.
* ``experiment.baseline: true``: the student is also trained alone (``vanilla``, same solver)
  into ``<output_dir>/baseline``, and both accuracies are printed.
With either, the configured run goes to ``<output_dir>/<method>``; otherwise to ``<output_dir>``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tskd_fast.data import DataSplits, build_data
from tskd_fast.engine import checkpoint as ckpt
from tskd_fast.engine.build import build_distiller, build_student, build_teacher, needs_teacher
from tskd_fast.engine.config import resolve_config
from tskd_fast.engine.distributed import DistContext
from tskd_fast.engine.logs import say
from tskd_fast.engine.rng import seed_everything
from tskd_fast.engine.run_dir import check_writable, clear_run, plan_run
from tskd_fast.engine.run_state import RunResult, TrainState, write_run_config
from tskd_fast.engine.trainer import Trainer
from tskd_fast.errors import UserError


@dataclass
class Stage:
    """One run of the job: its label, resolved config, folder, and the teacher run it depends on."""

    key: str
    label: str
    cfg: dict[str, Any]
    run_dir: str
    teacher_stage: Stage | None = None


def _derived(cfg: Mapping[str, Any], model: str, solver: Mapping[str, Any]) -> dict[str, Any]:
    """A vanilla config training ``model`` on the same data with ``solver``."""
    return resolve_config(
        {
            "experiment": {**cfg["experiment"], "baseline": False},
            "dataset": copy.deepcopy(cfg["dataset"]),
            "student": {"name": model},
            "distiller": {"name": "vanilla"},
            "solver": dict(solver),
            "trainer": dict(cfg["trainer"]),
        }
    )


def plan_stages(cfg: Mapping[str, Any]) -> list[Stage]:
    """The runs ``cfg`` asks for, in order, each with its own resolved config and folder."""
    out = cfg["experiment"]["output_dir"]
    method = cfg["distiller"]["name"]
    uses_teacher = needs_teacher(cfg)
    train_teacher = uses_teacher and cfg["teacher"]["checkpoint"] is None and cfg["teacher"]["train"]
    baseline = cfg["experiment"]["baseline"] and method != "vanilla"
    multi = train_teacher or baseline
    stages: list[Stage] = []
    teacher_stage = None
    if train_teacher:
        solver = {**cfg["solver"], **{k: v for k, v in cfg["teacher"]["solver"].items() if v is not None}}
        tcfg = _derived(cfg, cfg["teacher"]["name"], solver)
        tcfg["experiment"]["output_dir"] = os.path.join(out, "teacher")
        teacher_stage = Stage("teacher", "teacher", tcfg, tcfg["experiment"]["output_dir"])
        stages.append(teacher_stage)
    main = copy.deepcopy(dict(cfg))
    main["experiment"]["baseline"] = False
    if multi:
        main["experiment"]["output_dir"] = os.path.join(out, method)
    label = "student" if uses_teacher else ("model" if not multi else method)
    stages.append(Stage("main", label, main, main["experiment"]["output_dir"], teacher_stage))
    if baseline:
        bcfg = _derived(cfg, cfg["student"]["name"], cfg["solver"])
        bcfg["experiment"]["output_dir"] = os.path.join(out, "baseline")
        stages.append(Stage("baseline", "baseline", bcfg, bcfg["experiment"]["output_dir"]))
    return stages


def _result_from_state(stage: Stage, state: Mapping[str, Any]) -> RunResult:
    return RunResult.from_state(
        stage.label, stage.run_dir, stage.cfg, TrainState.from_checkpoint(state), reused=True
    )


def teacher_file(run_dir: str) -> str:
    """The weights of a finished run: model_final.pth, or checkpoint.pt if the run was killed
    between writing the two (both hold the state_dict under "model")."""
    final = os.path.join(run_dir, ckpt.FINAL)
    return final if os.path.isfile(final) else os.path.join(run_dir, ckpt.CHECKPOINT)


def run_stage(
    stage: Stage, ctx: DistContext, resume: bool, overwrite: bool, get_data: Callable[[], DataSplits]
) -> RunResult:
    """Start, resume or reuse one run (every rank takes the same decision from the same files)."""
    cfg = stage.cfg
    plan = plan_run(stage.run_dir, cfg, resume, overwrite, stage.label)
    if plan.action == "reuse":
        assert plan.state is not None
        if ctx.is_main:
            say(
                f"{stage.label}: reusing the finished run in {stage.run_dir} (same config; --overwrite retrains)"
            )
        return _result_from_state(stage, plan.state)
    given = cfg["teacher"]["checkpoint"]
    if needs_teacher(cfg) and given is not None and not os.path.isfile(given):
        # Before touching the data (possibly a long download): a missing teacher is the common slip.
        build_teacher(cfg["teacher"]["name"], given, 1)
    if ctx.is_main:
        check_writable(stage.run_dir)
    ctx.barrier()
    data = get_data()
    # Same seed for every run of a job: the distilled student and its baseline start identical.
    seed_everything(cfg["experiment"]["seed"])
    student = build_student(cfg, data.num_classes)
    teacher = None
    if needs_teacher(cfg):
        path = cfg["teacher"]["checkpoint"]
        if path is None:
            assert stage.teacher_stage is not None
            path = teacher_file(stage.teacher_stage.run_dir)
        teacher = build_teacher(cfg["teacher"]["name"], path, data.num_classes)
    distiller = build_distiller(cfg, student, teacher)
    trainer = Trainer(cfg, stage.run_dir, distiller, data, ctx, stage.label)
    if ctx.is_main:
        if overwrite:
            clear_run(stage.run_dir)
        write_run_config(cfg, stage.run_dir)
        if plan.action == "start":
            say(
                f"{stage.label}: training {cfg['student']['name']} with {cfg['distiller']['name']} -> {stage.run_dir}"
            )
    ctx.barrier()
    return trainer.fit(plan.state)


def run_job(
    cfg: Mapping[str, Any], ctx: DistContext, resume: bool = False, overwrite: bool = False
) -> list[RunResult]:
    """Run every stage of ``cfg``; print (rank 0) and save a summary; return the results."""
    stages = plan_stages(cfg)
    if resume and not overwrite:
        found = any(os.path.exists(os.path.join(s.run_dir, ckpt.CHECKPOINT)) for s in stages)
        if not found:
            raise UserError(
                f"--resume: no run to continue in {cfg['experiment']['output_dir']} (no {ckpt.CHECKPOINT}); "
                "drop --resume to start one"
            )
    cache: list[DataSplits] = []

    def get_data() -> DataSplits:
        # Built on first use only, so a job whose runs are all reused touches no data.
        if not cache:
            cache.append(build_data(cfg["dataset"], ctx.main_first))
            if ctx.is_main:
                say(f"data: {cache[0].description}")
        return cache[0]

    results = []
    for stage in stages:
        result = run_stage(stage, ctx, resume, overwrite, get_data)
        results.append(result)
        if not result.finished:
            if ctx.is_main:
                say(
                    f"{stage.label}: stopped after epoch {result.epochs_done}/{result.epochs} "
                    "(trainer.stop_after); continue with --resume"
                )
            break
    if ctx.is_main:
        summary = format_summary(results)
        say(summary)
        out = cfg["experiment"]["output_dir"]
        if len(stages) > 1:
            ckpt.atomic_text(
                json.dumps([asdict(r) for r in results], indent=2) + "\n", os.path.join(out, "summary.json")
            )
    return results


def format_summary(results: list[RunResult]) -> str:
    """A small table of the test accuracies, plus the gain of distillation over the baseline."""
    lines = ["", "results (test split, top-1 % after the last epoch; best epoch in brackets):"]
    teacher_shown = any(r.label == "teacher" for r in results)
    width = max([len(f"{r.model} {r.method}") for r in results] + [20])
    for r in results:
        if r.teacher_top1 is not None and not teacher_shown:
            lines.append(f"  {'teacher':9s} {'(loaded)':{width}s} {r.teacher_top1:6.2f}")
            teacher_shown = True
        acc = f"{r.top1:6.2f}" if r.top1 is not None else "   n/a"
        best = f" [{r.best_top1:.2f}]" if r.best_top1 is not None else ""
        state = "" if r.finished else f"  (unfinished: {r.epochs_done}/{r.epochs} epochs)"
        how = "reused" if r.reused else f"{r.wall_s:.0f}s"
        lines.append(
            f"  {r.label:9s} {r.model + ' ' + r.method:{width}s} {acc}{best}  ({how}, {r.run_dir}){state}"
        )
    by = {r.label: r for r in results}
    if (
        "student" in by
        and "baseline" in by
        and by["student"].top1 is not None
        and by["baseline"].top1 is not None
    ):
        gain = by["student"].top1 - by["baseline"].top1
        lines.append(f"  distillation gain over the baseline: {gain:+.2f} points")
    return "\n".join(lines)
