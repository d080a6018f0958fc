"""Whole training steps under torch.compile, for every method (CPU, tiny models).

* No graph break: with the fused ops the step is traced with ``fullgraph=True`` (which raises on
  any break) in the host-sync test; with the reference ops ``torch._dynamo.explain`` over the step
  a CompiledStep traces finds no break with a frame in tskd_fast (models, nn, distillers, ops), and
  no break at all.
* No host synchronisation in the traced forward and backward graphs (no op whose output is a
  value read from a tensor, or whose shape depends on values, e.g. ``aten._local_scalar_dense``,
  ``aten.nonzero``), and the fused ops appear in them as the package's custom ops; the traced step
  gives the eager step's losses and gradients. Traced with AOTAutograd and run eagerly (no inductor):
  seconds per method. Both checks are shown to catch a break and a sync in package code.
* Inductor itself: the tst step (every augmentation op, the KD loss op) against the eager step.
"""

import os

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd

import tskd_fast
from tests.tiny_steps import EPOCHS, METHODS, batch, tiny_distiller
from tskd_fast.distillers import StepClock, methods
from tskd_fast.engine.compile import CompiledStep, traced_step

PACKAGE = os.path.dirname(os.path.abspath(tskd_fast.__file__))
# The fused ops each method's traced graphs must call (forward, backward).
FUSED = {
    "vanilla": (set(), set()),
    "kd": ({"kd_loss"}, set()),
    "dtd_ka": ({"dtd_temperature", "kd_loss"}, set()),
    "reviewkd": ({"abf_fuse", "hcl_loss"}, {"abf_fuse_backward"}),
    "tskd": ({"convlstm_gates", "kd_loss"}, {"convlstm_gates_backward"}),
    "tst": ({"kd_loss"}, set()),
}
SYNC_OPS = ("aten.is_nonzero",)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_every_registered_method_is_checked():
    assert set(methods()) == set(METHODS)


def _package_frames(reason) -> list[str]:
    return [
        f"{os.path.relpath(f.filename, PACKAGE)}:{f.lineno} ({f.name})"
        for f in reason.user_stack
        if os.path.abspath(f.filename).startswith(PACKAGE + os.sep)
    ]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_reference_step_has_no_graph_break_in_package_code(method, monkeypatch):
    monkeypatch.setenv("TSKD_FAST_BACKEND", "reference")
    d, epoch = tiny_distiller(method)
    x, y = batch()
    d.loss_scales()
    explained = torch._dynamo.explain(traced_step)(d, x, y, StepClock(epoch, 0.5), d.step_inputs(x, y))
    ours = [
        f"{reason.reason.splitlines()[0]} at {frames}"
        for reason in explained.break_reasons
        if (frames := _package_frames(reason))
    ]
    assert not ours, "\n".join(ours)
    # No break anywhere (a break inside a nested call may be reported at its caller): one graph.
    assert not explained.break_reasons and explained.graph_count == 1, [
        r.reason.splitlines()[0] for r in explained.break_reasons
    ]


def test_a_break_in_package_code_is_reported():
    """The check above on a step that breaks in package code: tst's step without the draw made
    beforehand draws inside the traced code (a generator and host reads, which step_inputs moves out)."""
    d, epoch = tiny_distiller("tst")
    x, y = batch()
    explained = torch._dynamo.explain(traced_step)(d, x, y, StepClock(epoch, 0.5), {})
    frames = [frame for reason in explained.break_reasons for frame in _package_frames(reason)]
    assert any(frame.startswith(os.path.join("nn", "augment", "module.py")) for frame in frames), frames


def _syncs(gm) -> list[str]:
    found = []
    for node in gm.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        tags = target.tags
        if (
            torch.Tag.data_dependent_output in tags
            or torch.Tag.dynamic_output_shape in tags
            or str(target).startswith(SYNC_OPS)
        ):
            found.append(str(target))
    return found


def _fused_ops(gm) -> set[str]:
    return {
        str(node.target).split(".")[1]
        for node in gm.graph.nodes
        if node.op == "call_function" and str(node.target).startswith("tskd_fast.")
    }


def _keeping(graphs: dict):
    """An AOTAutograd backend that keeps the forward and backward graphs in ``graphs``."""

    def keep(name):
        def compiler(gm, example_inputs):
            graphs[name] = gm
            return gm

        return compiler

    return aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward"))


def test_a_host_sync_in_a_traced_graph_is_found():
    """The sync check on graphs that read a value (``.item()``) and take a value-dependent shape."""
    graphs = {}

    def step(x):
        # An integer read (a float one used only in arithmetic is traced as a tensor op, no read).
        n = x.detach().long().sum().item()
        return x * x.new_ones(n).sum() + torch.nonzero(x).sum()

    with torch._dynamo.config.patch(capture_scalar_outputs=True, capture_dynamic_output_shape_ops=True):
        torch.compile(step, backend=_keeping(graphs), fullgraph=True)(torch.ones(3, requires_grad=True))
    found = _syncs(graphs["forward"])
    assert any("_local_scalar_dense" in op for op in found) and any("nonzero" in op for op in found), found


@pytest.mark.parametrize("method", sorted(METHODS))
def test_traced_step_has_no_host_sync_forward_and_backward(method):
    graphs = {}
    backend = _keeping(graphs)
    eager, epoch = tiny_distiller(method)
    traced, _ = tiny_distiller(method)
    x, y = batch()
    draws = eager.step_inputs(x, y)  # both steps use one draw (tst)
    step = torch.compile(traced_step, backend=backend, fullgraph=True)
    traced.loss_scales()
    logits, losses = step(traced, x, y, StepClock(epoch, 0.5), draws)
    sum(losses.values()).backward()
    e_logits, e_losses = eager.forward_train(x, y, epoch=epoch, progress=0.5, **draws)
    sum(e_losses.values()).backward()

    assert set(graphs) == {"forward", "backward"}
    for name, gm in graphs.items():
        assert not _syncs(gm), f"{name} graph reads tensor values on the host: {_syncs(gm)}"
    assert _fused_ops(graphs["forward"]) == FUSED[method][0]
    assert _fused_ops(graphs["backward"]) == FUSED[method][1]
    torch.testing.assert_close(logits, e_logits)
    assert set(losses) == set(e_losses)
    for key in losses:
        torch.testing.assert_close(losses[key], e_losses[key], rtol=1e-4, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), traced.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_schedule_factors_and_the_clock_do_not_recompile():
    """ReviewKD's warm-up factor changes every epoch and progress every step: the graph reads the
    factors as a tensor and the clock not at all, so one compilation serves the whole run."""
    from torch._dynamo.testing import CompileCounter

    d, _ = tiny_distiller("reviewkd")
    counter = CompileCounter()
    step = CompiledStep(d, "default", fullgraph=True, backend=counter)
    x, y = batch()
    factors = []
    for epoch in range(3):
        d.on_epoch_start(epoch, EPOCHS)
        factors.append(d.term_factors["hcl"])
        for i in range(2):
            _, losses = step(x, y, epoch=epoch, progress=(epoch + i / 2) / EPOCHS)
            eager = d.terms["hcl"](_outputs_for_hcl(d, x)) * d.weights["hcl"] * factors[-1]
            torch.testing.assert_close(losses["hcl"], eager, rtol=1e-4, atol=1e-6)
    assert factors == [0.0, 0.25, 0.5]
    assert counter.frame_count == 1


def _outputs_for_hcl(d, x):
    from tskd_fast.distillers.base import StepOutputs

    with torch.no_grad():
        s_logits, s_feats = d.student(x, with_features=True)
        t_logits, t_feats = d.teacher(x, with_features=True)
        outputs = StepOutputs(s_logits, t_logits, None, s_feats, t_feats)
        outputs.extras = d.run_extras(x, outputs)
        return outputs


def test_inductor_step_of_tst_matches_the_eager_step():
    """The real compiler (inductor, C++ on the CPU) on the method with the most traced code of its
    own: augmentation ops computed and weighted by the draw (one of each kind: a colour op, a warp,
    the histogram equalisation and the cutout window computed on the device; all 14 would take
    minutes of code generation) and the fused KD loss."""
    ops = ("distiller.tst.ops=[solarize,rotate,equalize,cutout]",)
    eager, epoch = tiny_distiller("tst", overrides=ops)
    compiled, _ = tiny_distiller("tst", overrides=ops)
    step = CompiledStep(compiled, "default", fullgraph=True)
    x, y = batch()
    for _ in range(2):
        logits, losses = step(x, y, epoch=epoch, progress=0.5)
        sum(losses.values()).backward()
        e_logits, e_losses = eager.forward_train(x, y, epoch=epoch, progress=0.5)
        sum(e_losses.values()).backward()
        torch.testing.assert_close(logits, e_logits, rtol=1e-4, atol=1e-5)
        for key in e_losses:
            torch.testing.assert_close(losses[key], e_losses[key], rtol=1e-4, atol=1e-5)
        for (name, p), q in zip(eager.student.named_parameters(), compiled.student.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4, msg=name)
        eager.zero_grad(set_to_none=True)
        compiled.zero_grad(set_to_none=True)
    # Both consumed one draw per step from generators seeded alike.
    assert torch.equal(eager.augment.generator.get_state(), compiled.augment.generator.get_state())
