"""Whole training steps: one optimizer step of resnet32x4 -> resnet8x4 on CIFAR-shaped input for
every registered distillation method, with the fused ops (``auto``) against ``reference``, eager
and compiled.

The step is taken in the method's last epoch (its last review epoch for TSKD), after replaying
the epoch hooks of the run before it. What alternates in one run, on the same models and batch:
the method's full step with TSKD_FAST_BACKEND=reference, the same with auto, the student alone
(forward, CE, backward, optimizer step), the teacher's forward, and for each compile mode asked
for (``trainer.compile``'s values: default, reduce-overhead, max-autotune) the full step compiled
as the trainer compiles it (tskd_fast.engine.compile.CompiledStep), with reference and with auto.
The split is by subtraction: distillation code = step - student alone - teacher forward (the
method's loss terms and its own modules, forward and backward, and their share of the optimizer
step); it is given for the eager steps.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources

import torch
import torch.nn.functional as torch_f

from tskd_fast.bench.memory import peak_memory_bytes
from tskd_fast.bench.timing import Plan, measure, paired_ratios, warm_up
from tskd_fast.ops.backend import ENV_VAR

TEACHER, STUDENT, CLASSES = "resnet32x4", "resnet8x4", 100


@dataclass
class StepResult:
    """One method's row for one mode ("eager", or the compile mode of both steps): medians in ms
    (p20/p80 of the two full steps), shares of the auto step (eager rows only), the seconds the
    compiled auto step's first call took (compiling it), and for compiled rows the graph breaks and
    graphs torch.compile counted while compiling each step (0 breaks and 1 graph when the whole
    step traced as one). ``speedup`` is the reference median over the auto median;
    ``paired_speedup`` the median (p20, p80) over rounds of the reference step's time over the auto
    step's in the same round (timing.paired_ratios)."""

    method: str
    device: str
    batch: int
    reference_ms: float
    reference_p20_ms: float
    reference_p80_ms: float
    auto_ms: float
    auto_p20_ms: float
    auto_p80_ms: float
    student_ms: float
    teacher_ms: float
    speedup: float
    distill_share_reference: float | None
    distill_share_auto: float | None
    teacher_share: float | None
    peak_mib_reference: float | None
    peak_mib_auto: float | None
    mode: str = "eager"
    compile_s: float | None = None
    graph_breaks_reference: int | None = None
    graph_breaks_auto: int | None = None
    graphs_reference: int | None = None
    graphs_auto: int | None = None
    paired_speedup: float | None = None
    paired_speedup_p20: float | None = None
    paired_speedup_p80: float | None = None


def step_plan(quick: bool) -> Plan:
    """How long `tskd-fast bench` times the steps unless told otherwise (--quick: `quick`)."""
    if quick:
        return Plan(warmup=1, repeat=3, min_repeat=3, max_seconds=4.0)
    return Plan(warmup=2, repeat=10, min_repeat=5, max_seconds=60.0)


def method_config(method: str) -> dict:
    """The method's packaged resnet32x4 -> resnet8x4 CIFAR-100 config when there is one, else the
    default config switched to that method, pair and dataset."""
    from tskd_fast.engine.config import load_config

    pair = ["student.name=" + STUDENT, "teacher.name=" + TEACHER, "teacher.train=true"]
    packaged = resources.files("tskd_fast") / "configs" / "cifar100" / method / f"{TEACHER}_{STUDENT}.yaml"
    if packaged.is_file():
        return load_config(f"configs/cifar100/{method}/{TEACHER}_{STUDENT}.yaml", pair)
    return load_config(None, [f"distiller.name={method}", "dataset.name=cifar100", *pair])


def distilling_methods() -> list[str]:
    """Registered methods that distil from a teacher (``vanilla`` has no distillation code)."""
    from tskd_fast.distillers import methods
    from tskd_fast.engine.build import needs_teacher

    found = []
    for name in methods():
        try:
            if needs_teacher(method_config(name)):
                found.append(name)
        except Exception:  # noqa: BLE001  (a method whose config cannot be built is reported later)
            found.append(name)
    return found


def bench_epoch(distiller: torch.nn.Module, epochs: int) -> int:
    """The epoch whose step is timed: the last one (past every warm-up, the full loss on), or for a
    method with a review schedule (``distiller.schedule.review_epochs``, TSKD) its last review
    epoch, where its own modules run."""
    schedule = getattr(distiller, "schedule", None)
    reviews = schedule.review_epochs(epochs) if hasattr(schedule, "review_epochs") else []
    return reviews[-1] if reviews else epochs - 1


def with_backend(backend: str, fn: Callable[[], None]) -> Callable[[], None]:
    """fn run with TSKD_FAST_BACKEND=backend (read by every op call), restored afterwards."""

    def run() -> None:
        old = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = backend
        try:
            fn()
        finally:
            if old is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = old

    return run


def own_random_stream(module: torch.nn.Module, fn: Callable[[], None]) -> Callable[[], None]:
    """fn run on a copy of its own of the generators the module's submodules draw from (TST's
    augmentation picks its ops at random each step), so that two steps wrapped apart see the same
    sequence of draws, however their calls interleave; without it the reference and the auto step
    would time different ops."""
    generators = [
        m.generator for m in module.modules() if isinstance(getattr(m, "generator", None), torch.Generator)
    ]
    states = [g.get_state() for g in generators]

    def run() -> None:
        for generator, state in zip(generators, states):
            generator.set_state(state)
        fn()
        states[:] = [g.get_state() for g in generators]

    return run


def build_step(
    method: str,
    device: torch.device,
    batch: int,
    compile_modes: Sequence[str] = (),
    *,
    same_draws: bool = True,
) -> dict[str, Callable[[], None]]:
    """The timed callables of a method: "reference", "auto", "student", "teacher", and
    "<mode> reference" / "<mode> auto" for each compile mode (compiled on their first call).
    ``same_draws=False`` lets the full steps share the module's generators, as the bench did before
    each got its own copy (benchmarks/tst_draws.py measures what that did to TST's ratio)."""
    from tskd_fast.engine.build import build_distiller
    from tskd_fast.engine.compile import COMPILE_MODES, CompiledStep
    from tskd_fast.engine.optim import build_optimizer
    from tskd_fast.models import build_model

    cfg = method_config(method)
    torch.manual_seed(0)
    student, teacher = build_model(STUDENT, CLASSES), build_model(TEACHER, CLASSES)
    distiller = build_distiller(cfg, student, teacher).to(device)
    channels_last = bool(cfg["trainer"]["channels_last"])
    if channels_last:
        distiller.to(memory_format=torch.channels_last)
    distiller.train()
    epochs = int(cfg["solver"]["epochs"])
    epoch = bench_epoch(distiller, epochs)
    # The epoch hooks of the run so far (no steps), so that state built up over epochs (TSKD's
    # student snapshots) is there as in a real run.
    for earlier in range(epoch):
        distiller.on_epoch_start(earlier, epochs)
        distiller.on_epoch_end(earlier)
    distiller.on_epoch_start(epoch, epochs)
    # A small lr: many steps on one random batch must not drive the weights to inf/NaN.
    solver = dict(cfg["solver"], lr=1e-4)
    optimizer = build_optimizer(distiller.param_groups(), solver)
    student_only = build_model(STUDENT, CLASSES).to(device)
    if channels_last:
        student_only.to(memory_format=torch.channels_last)
    student_optimizer = build_optimizer([{"params": list(student_only.parameters())}], solver)

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, CLASSES, (batch,), generator=gen).to(device)

    def full_step_with(forward_train: Callable) -> Callable[[], None]:
        def full_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            _, losses = forward_train(images, target, epoch=epoch, progress=(epoch + 0.5) / epochs)
            sum(losses.values()).backward()
            optimizer.step()

        return full_step

    full_step = full_step_with(distiller.forward_train)

    def student_step() -> None:
        student_optimizer.zero_grad(set_to_none=True)
        torch_f.cross_entropy(student_only(images), target).backward()
        student_optimizer.step()

    def teacher_forward() -> None:
        with torch.no_grad():
            distiller.teacher(images)

    def own_draws(fn: Callable[[], None]) -> Callable[[], None]:
        return own_random_stream(distiller, fn) if same_draws else fn

    fns = {
        "reference": with_backend("reference", own_draws(full_step)),
        "auto": with_backend("auto", own_draws(full_step)),
        "student": student_step,
        "teacher": teacher_forward,
    }
    for mode in compile_modes:
        if mode not in COMPILE_MODES or mode == "false":
            raise ValueError(f"compile mode must be one of {COMPILE_MODES[1:]}, got {mode!r}")
        for backend in ("reference", "auto"):
            # One CompiledStep per backend: the backend is read while tracing, so each has its graph.
            compiled = full_step_with(CompiledStep(distiller, mode))
            fns[f"{mode} {backend}"] = with_backend(backend, own_draws(compiled))
    return fns


@contextlib.contextmanager
def counting_graphs() -> Iterator[dict[str, int]]:
    """Counts, into the dict it yields, the graph breaks and the graphs torch.compile makes in the
    block (dynamo's own counters, cleared on entry; a break inside a library frame counts too)."""
    from torch._dynamo.utils import counters

    counters.clear()
    counted = {"breaks": 0, "graphs": 0}
    try:
        yield counted
    finally:
        counted["breaks"] = sum(counters["graph_break"].values())
        counted["graphs"] = counters["stats"]["unique_graphs"]


def run_method(
    method: str,
    device: torch.device,
    batch: int,
    plan: Plan,
    with_memory: bool,
    compile_modes: Sequence[str] = (),
) -> list[StepResult]:
    """Time one method's step (see the module docstring): the eager row, then one row per compile
    mode, all from one alternating measurement. Raises on a method that cannot step."""
    fns = build_step(method, device, batch, compile_modes)
    compile_s, traced = {}, {}
    for mode in compile_modes:
        for backend in ("reference", "auto"):
            name = f"{mode} {backend}"
            began = time.perf_counter()
            with counting_graphs() as counted:
                fns[name]()  # compiles
            compile_s[name] = time.perf_counter() - began
            traced[name] = counted
            fns[name]()  # CUDA graphs: recorded on a later call than the compiling one
    call_ms, failed = warm_up(fns, device, plan.warmup)
    if failed:
        name, why = next(iter(failed.items()))
        raise RuntimeError(f"{name} step failed: {why}")
    stats = measure(fns, device, plan, call_ms)
    student, teacher = stats["student"].median, stats["teacher"].median
    rows = []
    for mode in ("eager", *compile_modes):
        prefix = "" if mode == "eager" else f"{mode} "
        ref, auto = stats[prefix + "reference"], stats[prefix + "auto"]
        paired = paired_ratios(ref, auto)
        peaks = {"reference": None, "auto": None}
        if with_memory:
            for backend in peaks:
                peaks[backend] = peak_memory_bytes(fns[prefix + backend], device) / 2**20
        eager = mode == "eager"
        rows.append(
            StepResult(
                method=method,
                device=device.type,
                batch=batch,
                reference_ms=ref.median,
                reference_p20_ms=ref.p20,
                reference_p80_ms=ref.p80,
                auto_ms=auto.median,
                auto_p20_ms=auto.p20,
                auto_p80_ms=auto.p80,
                student_ms=student,
                teacher_ms=teacher,
                speedup=ref.median / auto.median,
                distill_share_reference=(ref.median - student - teacher) / ref.median if eager else None,
                distill_share_auto=(auto.median - student - teacher) / auto.median if eager else None,
                teacher_share=teacher / auto.median if eager else None,
                peak_mib_reference=peaks["reference"],
                peak_mib_auto=peaks["auto"],
                mode=mode,
                compile_s=None if eager else compile_s[prefix + "auto"],
                graph_breaks_reference=None if eager else traced[prefix + "reference"]["breaks"],
                graph_breaks_auto=None if eager else traced[prefix + "auto"]["breaks"],
                graphs_reference=None if eager else traced[prefix + "reference"]["graphs"],
                graphs_auto=None if eager else traced[prefix + "auto"]["graphs"],
                paired_speedup=paired.median,
                paired_speedup_p20=paired.p20,
                paired_speedup_p80=paired.p80,
            )
        )
    return rows
