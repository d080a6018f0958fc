"""The bench's op families: inputs, the fused call wired like the reference, the minimal-bytes
models against the tensors they name, and one alternating run of each family.

ConvLSTM gates, ABF fusion and HCL run on stand-ins (tests/bench_standins.py) until their real
ops are merged; from then on the same tests run the real ops.
"""

import pytest
import torch

from tests.bench_standins import install_missing
from tskd_fast.bench.cases import FAMILIES, Shape, forward_backward
from tskd_fast.bench.runner import COMPILE, EAGER, run_case
from tskd_fast.bench.timing import Plan
from tskd_fast.ops import _extension

CPU = torch.device("cpu")
SMALL = {
    "kd_loss": Shape("7x13", (7, 13)),
    "dtd": Shape("7x13", (7, 13)),
    "convlstm": Shape("3x5x6x7", (3, 5, 6, 7)),
    "abf": Shape("2x5x6x6<-3x3", (2, 5, 6, 3)),
    "hcl": Shape("3 levels", ((2, 3, 9, 9), (2, 5, 4, 4), (2, 5, 1, 1))),
}
TINY_PLAN = Plan(warmup=1, repeat=3, min_repeat=3, max_seconds=5.0)


@pytest.fixture(autouse=True)
def _ops(monkeypatch):
    install_missing(monkeypatch)


def _nbytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def test_every_family_is_listed_with_quick_shapes_and_unique_labels():
    assert set(FAMILIES) == set(SMALL)
    for family in FAMILIES.values():
        assert family.available()
        labels = [s.label for s in family.shapes]
        assert len(set(labels)) == len(labels)
        quick = family.shapes_for(quick=True, device=CPU)
        assert 1 <= len(quick) < len(family.shapes)
        assert family.shapes_for(quick=False) == list(family.shapes)


def test_llm_vocabulary_shape_runs_on_cuda_only_and_in_bf16():
    for name in ("kd_loss", "dtd"):
        family = FAMILIES[name]
        llm = [s for s in family.shapes if s.label == "4096x128256"]
        assert len(llm) == 1 and llm[0].quick
        assert llm[0] in family.shapes_for(quick=True, device=torch.device("cuda"))
        assert llm[0] not in family.shapes_for(quick=True, device=CPU)
        assert llm[0].dtypes(["float32", "float16"]) == ["bfloat16"]
        assert family.shapes[0].dtypes(["float32", "float16"]) == ["float32", "float16"]


@pytest.mark.parametrize("name", list(SMALL))
def test_inputs_are_seeded_by_the_shape(name):
    family, shape = FAMILIES[name], SMALL[name]
    a, b = family.make_inputs(shape, CPU, torch.float32), family.make_inputs(shape, CPU, torch.float32)
    for x, y in zip(a.leaves, b.leaves):
        assert x.requires_grad and torch.equal(x, y) and x.abs().sum() > 0
    other = family.make_inputs(shape, CPU, torch.float64)
    assert all(t.dtype == torch.float64 for t in other.leaves)


def _outputs_and_grads(fn, inputs):
    for leaf in inputs.leaves:
        leaf.grad = None
    out = fn(*inputs.args)
    forward_backward(fn, inputs)()
    outs = out if isinstance(out, tuple) else (out,)
    return [o.detach() for o in outs], [leaf.grad.clone() for leaf in inputs.leaves]


@pytest.mark.parametrize("name", list(SMALL))
def test_fused_call_matches_the_reference_call(name):
    """The case's fused call and its baseline compute the same thing from the same arguments."""
    family, shape = FAMILIES[name], SMALL[name]
    inputs = family.make_inputs(shape, CPU, torch.float32)
    backend = "cpu" if _extension.has_cpu_kernels() else "reference"
    fused_out, fused_grads = _outputs_and_grads(family.fused(backend), inputs)
    ref_out, ref_grads = _outputs_and_grads(family.reference, inputs)
    for got, want in zip(fused_out + fused_grads, ref_out + ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _model_bytes(name, inputs, fn):
    """The minimal-bytes model of benchmarks/README.md, counted on the real tensors."""
    for leaf in inputs.leaves:
        leaf.grad = None
    out = fn(*inputs.args)
    forward_backward(fn, inputs)()
    if name == "kd_loss":
        s, t = inputs.args
        return _nbytes(s, t, s.grad)
    if name == "dtd":
        s, t, target = inputs.args
        return _nbytes(s, t, s.grad, target)
    if name == "convlstm":
        gates, c_prev = inputs.args
        h, c = out
        dh, dc = inputs.grads
        return _nbytes(gates, c_prev, h, c) + _nbytes(dh, dc, gates, c_prev, gates.grad, c_prev.grad)
    if name == "abf":
        x, y = inputs.args[:2]
        (grad,) = inputs.grads
        return _nbytes(x, y, out) + _nbytes(grad, x, y, x.grad, y.grad)
    student, teacher = inputs.args
    return _nbytes(*student, *teacher, *(s.grad for s in student))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(SMALL))
def test_minimal_bytes_model_counts_the_named_tensors(name, dtype):
    family, shape = FAMILIES[name], SMALL[name]
    inputs = family.make_inputs(shape, CPU, dtype)
    assert family.minimal_bytes(shape, dtype) == _model_bytes(name, inputs, family.reference)


@pytest.mark.parametrize("name", list(SMALL))
def test_one_alternating_run_of_each_family(name):
    family = FAMILIES[name]
    copy_bytes = 1 << 20
    rows, notes = run_case(
        family, SMALL[name], CPU, torch.float32, TINY_PLAN, copy_bytes, compile_baseline=False
    )
    assert notes == []
    by_backend = {r.backend: r for r in rows}
    expected = {EAGER} | ({"cpu"} if _extension.has_cpu_kernels() else set())
    assert expected <= set(by_backend)
    eager = by_backend[EAGER]
    assert eager.speedup_eager == pytest.approx(1.0) and eager.speedup_compile is None
    for row in rows:
        assert row.samples == 3 and row.p20_ms <= row.median_ms <= row.p80_ms
        assert row.gbps == pytest.approx(
            family.minimal_bytes(SMALL[name], torch.float32) / row.median_ms / 1e6
        )
        # The copy took its turn in the same rounds: one bandwidth for the whole case.
        assert row.copy_gbps == eager.copy_gbps and row.copy_gbps > 0
        assert row.bw_share == pytest.approx(row.gbps / row.copy_gbps)
        assert row.speedup_eager == pytest.approx(eager.median_ms / row.median_ms)
    assert eager.peak_mib > 0


def test_compile_baseline_and_extra_baselines_of_the_kd_loss():
    rows, notes = run_case(FAMILIES["kd_loss"], SMALL["kd_loss"], CPU, torch.float32, TINY_PLAN, None)
    assert notes == []
    by_backend = {r.backend: r for r in rows}
    assert {EAGER, COMPILE, "eager DistillKL"} <= set(by_backend)
    assert by_backend[COMPILE].speedup_compile == pytest.approx(1.0)
    assert by_backend[COMPILE].bw_share is None and by_backend[COMPILE].copy_gbps is None


def test_an_implementation_that_fails_becomes_a_note(monkeypatch):
    import dataclasses

    def broken(student, teacher):
        raise RuntimeError("no kernel for this dtype\nsecond line")

    family = dataclasses.replace(
        FAMILIES["kd_loss"], extra_baselines=lambda device, dtype: {"broken": broken}
    )
    rows, notes = run_case(
        family, SMALL["kd_loss"], CPU, torch.float32, TINY_PLAN, None, compile_baseline=False
    )
    assert "broken" not in {r.backend for r in rows} and EAGER in {r.backend for r in rows}
    assert notes == ["kd_loss 7x13 float32 cpu: broken failed: RuntimeError: no kernel for this dtype"]
