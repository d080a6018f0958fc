"""``trainer.compile`` / ``teacher.compile`` in the trainer (CPU): ``tskd-fast train`` with
``trainer.compile=default`` completes for every method with one traced graph per step kind and no
graph break; a compiled run writes the checkpoints of an eager run (no ``_orig_mod.`` in any key),
``--resume`` continues it exactly, the config values are checked, the teacher compiles in place,
and a DDP-wrapped student traces into the step.

The runs here trace with Dynamo and AOTAutograd (forward and backward graphs, as inductor receives
them) and run those graphs eagerly: inductor's own code generation takes tens of seconds per step
on the CPU; test_compile_step.py runs it on the tst step, and benchmarks/README.md reports every
method's step compiled with it."""

import functools
import math
import os
import socket

import pytest
import torch
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend

from tests.tiny_steps import METHODS
from tskd_fast.cli import main
from tskd_fast.engine import compile as engine_compile
from tskd_fast.engine.checkpoint import CHECKPOINT, FINAL, load_state
from tskd_fast.engine.compile import compile_teacher, student_step
from tskd_fast.engine.config import RUNTIME_KEYS, load_config
from tskd_fast.errors import ConfigError
from tskd_fast.models import build_model

PACKAGE = os.path.dirname(os.path.abspath(engine_compile.__file__)).rsplit(os.sep, 1)[0] + os.sep

# Two epochs of four batches of 4 (3x32x32, 20 classes), resnet8 student and teacher.
BASE = [
    "dataset.shapes.train_size=16",
    "dataset.shapes.test_size=16",
    "solver.batch_size=4",
    "solver.epochs=2",
    "teacher.name=resnet8",
    "trainer.compile=default",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "experiment.baseline=false",
    "experiment.seed=3",
]
# tskd: a review epoch (the second) within the two epochs; its review step is a graph of its own.
EXTRA = {"tskd": ["distiller.tskd.memory_points=1"]}
GRAPHS = {"tskd": 2}


@pytest.fixture
def teacher_checkpoint(tmp_path):
    torch.manual_seed(5)
    path = tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 20).state_dict()}, path)
    return path


@pytest.fixture
def traced_steps(monkeypatch):
    """The trainer's compiled steps traced by a counting AOTAutograd backend (see the docstring)."""
    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(
        engine_compile, "CompiledStep", functools.partial(engine_compile.CompiledStep, backend=counter)
    )
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield counter
    torch._dynamo.reset()


def _keys(state):
    if isinstance(state, dict):
        return [k for key, value in state.items() for k in [str(key), *_keys(value)]]
    if isinstance(state, list):
        return [k for value in state for k in _keys(value)]
    return []


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"tst"}))  # tst: the resume test below
def test_train_with_compile_completes_for_every_method(
    method, tmp_path, teacher_checkpoint, traced_steps, capsys
):
    args = [*BASE, f"distiller.name={method}", f"teacher.checkpoint={teacher_checkpoint}", *METHODS[method]]
    assert main(["train", "-o", str(tmp_path / "run"), *args, *EXTRA.get(method, [])]) == 0
    capsys.readouterr()
    state = load_state(str(tmp_path / "run" / CHECKPOINT))
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    # Every step of the run went through the compiled graph: one per step kind, none broken.
    assert traced_steps.frame_count == GRAPHS.get(method, 1)
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    assert not [k for k in _keys(state) if "_orig_mod" in k]


@pytest.mark.parametrize("method", ["reviewkd", "tskd"])  # the methods with the most fused ops
def test_train_with_compile_under_bf16_autocast(method, tmp_path, teacher_checkpoint, traced_steps, capsys):
    """trainer.amp=bf16 (autocast around the compiled step): one graph per step kind, no break."""
    args = [*BASE, f"distiller.name={method}", f"teacher.checkpoint={teacher_checkpoint}", *METHODS[method]]
    out = tmp_path / "run"
    assert main(["train", "-o", str(out), *args, *EXTRA.get(method, []), "trainer.amp=bf16"]) == 0
    capsys.readouterr()
    assert traced_steps.frame_count == GRAPHS.get(method, 1)
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    history = load_state(str(out / CHECKPOINT))["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) for row in history), history


def test_compiled_run_has_plain_checkpoints_and_resumes_exactly(
    tmp_path, teacher_checkpoint, traced_steps, capsys
):
    """tst (the method with the most state: its augmentation module, optimiser and generator)."""
    common = [*BASE, "distiller.name=tst", f"teacher.checkpoint={teacher_checkpoint}"]
    assert main(["train", "-o", str(tmp_path / "full"), *common]) == 0
    assert traced_steps.frame_count == 1  # every step of the run in one compiled graph
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    assert main(["train", "-o", str(tmp_path / "cut"), *common, "trainer.stop_after=1"]) == 0
    assert main(["train", "-o", str(tmp_path / "cut"), *common, "--resume"]) == 0
    capsys.readouterr()
    full = load_state(str(tmp_path / "full" / CHECKPOINT))
    resumed = load_state(str(tmp_path / "cut" / CHECKPOINT))
    assert not [k for k in _keys(full) if "_orig_mod" in k]
    assert not [
        k for k in torch.load(tmp_path / "full" / FINAL, weights_only=True)["model"] if "_orig_mod" in k
    ]
    assert set(full["model"]) == set(build_model("resnet8", 20).state_dict())
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    strip = [{k: v for k, v in row.items() if k != "time_s"} for row in full["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "time_s"} for row in resumed["history"]]


def test_compile_values_are_checked_and_do_not_change_a_runs_identity():
    cfg = load_config(None, ["trainer.compile=reduce-overhead", "teacher.compile=off"])
    assert (cfg["trainer"]["compile"], cfg["teacher"]["compile"]) == ("reduce-overhead", "false")
    assert load_config(None, [])["trainer"]["compile"] == "false"
    with pytest.raises(ConfigError, match="trainer.compile must be one of false, default, reduce-overhead"):
        load_config(None, ["trainer.compile=fast"])
    # A run may be resumed, and a cached teacher reused, with compilation switched on or off.
    assert {"trainer.compile", "teacher.compile"} <= RUNTIME_KEYS
    with pytest.raises(ValueError, match="trainer.compile must be one of"):
        student_step(torch.nn.Linear(1, 1), "yes")


def test_teacher_compiles_in_place_with_its_keys():
    torch._dynamo.reset()
    model = build_model("resnet8", 10).eval()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    counter = CompileCounter()
    compile_teacher(model, "default", backend=counter)
    compile_teacher(None, "default")  # no teacher: nothing to do
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert counter.frame_count == 1 and list(model.state_dict()) == keys
    torch._dynamo.reset()


def _ddp_rank(rank: int, world: int, port: int) -> None:
    """One rank of the DDP test: the compiled and the eager step of a DDP-wrapped reviewkd
    distiller (student and ABF stack wrapped) on this rank's own batch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tests.tiny_steps import batch, tiny_distiller
    from tskd_fast.distillers import StepClock
    from tskd_fast.engine.compile import CompiledStep, traced_step

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = batch()
        x, y = x + rank, y.roll(rank)  # each rank its own batch
        grads, distillers = [], []
        for compiled in (False, True):
            torch._dynamo.reset()
            d, epoch = tiny_distiller("reviewkd")
            d.wrap_trainable(DistributedDataParallel)
            step = CompiledStep(d, "default", backend="aot_eager") if compiled else d.forward_train
            _, losses = step(x, y, epoch=epoch)
            sum(losses.values()).backward()
            grads.append([p.grad.clone() for p in d.parameters() if p.requires_grad])
            distillers.append(d)
        for eager, traced in zip(*grads, strict=True):
            torch.testing.assert_close(traced, eager, rtol=1e-4, atol=1e-6)
        # The gradients were all-reduced inside the compiled step: every rank holds the same.
        flat = torch.cat([g.flatten() for g in grads[1]])
        every = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(every, flat)
        assert all(torch.equal(every[0], other) for other in every[1:])

        # Where the traced step breaks: only inside DDP's forward wrapper (its reducer and logger
        # run eagerly by torch's design; the module inside is traced), never in package code.
        def step_and_backward(d, clock):
            _, losses = traced_step(d, x, y, clock, {})
            sum(losses.values()).backward()

        d = distillers[1]
        d.zero_grad(set_to_none=True)
        explained = torch._dynamo.explain(step_and_backward)(d, StepClock(epoch, 0.5))
        innermost = [reason.user_stack[-1] for reason in explained.break_reasons]
        ours = [f"{f.filename}:{f.lineno}" for f in innermost if f.filename.startswith(PACKAGE)]
        assert not ours, ours
        assert any(f.filename.endswith(os.path.join("parallel", "distributed.py")) for f in innermost)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_compiled_step_runs_through_ddp():
    """Two gloo processes: the DDP-wrapped modules (the trainer's layout) run inside the compiled
    step, whose gradients are the eager DDP step's, averaged over both ranks."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_rank, args=(2, port), nprocs=2)
