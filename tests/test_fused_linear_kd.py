"""tskd_fast.functional.fused_linear_kd against autograd of the full-logits reference: every
divergence, KA mode, temperature kind, the top-k teacher, ignore_index, the padded vocabulary and
each reduction, with the gradients of the hidden states, weight and bias; odd shapes, dtypes,
gradcheck, opcheck, torch.compile and bad inputs."""

import itertools

import pytest
import torch

from tests.conftest import device_of
from tests.test_fused_linear_kd_rows import BACKENDS
from tests.tolerance import assert_close_to_truth
from tskd_fast import functional as F
from tskd_fast.nn import FusedLinearKDLoss
from tskd_fast.ops import fused_linear_kd as ops_flkd
from tskd_fast.reference.fused_linear_kd import DIVERGENCES
from tskd_fast.reference.fused_linear_kd import fused_linear_kd as reference_flkd

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused_linear_kd row kernel built")


class Problem:
    """Seeded inputs: N rows, student width hs, teacher width ht, real vocabulary V, the lm_heads
    padded to V + pad_s and V + pad_t rows."""

    def __init__(
        self, n=13, hs=6, ht=9, vocab=37, pad_s=3, pad_t=5, dtype=torch.float64, device="cpu", bias=True
    ):
        gen = torch.Generator().manual_seed(n * 1000 + vocab)

        def randn(*shape, scale=1.0):
            return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(
                device=device, dtype=dtype
            )

        self.vocab = vocab
        self.xs = randn(n, hs)
        self.ws = randn(vocab + pad_s, hs, scale=0.8)
        self.bs = randn(vocab + pad_s, scale=0.5) if bias else None
        self.xt = randn(n, ht)
        self.wt = randn(vocab + pad_t, ht, scale=0.8)
        self.bt = randn(vocab + pad_t, scale=0.5) if bias else None
        self.target = torch.randint(0, vocab, (n,), generator=gen).to(device)
        if n > 3:
            self.target[::4] = -100
            # rows the teacher gets right, so that KA's two branches both run
            with torch.no_grad():
                t = self.xt.double() @ self.wt.double()[:vocab].T
                if self.bt is not None:
                    t = t + self.bt.double()[:vocab]
            self.target[1::4] = t[1::4].argmax(dim=1).to(device)

    def topk(self, k=5):
        with torch.no_grad():
            t = (self.xt.double() @ self.wt.double()[: self.vocab].T).log_softmax(dim=1).topk(k, dim=1)
        return t.indices, t.values.to(self.xs.dtype)


def loss_and_grads(fn, p: Problem, upstream=None, **kwargs):
    """(loss, grads of xs, ws, bs) of fn(...) on fresh leaves; upstream weights reduction none."""
    xs = p.xs.detach().clone().requires_grad_(True)
    ws = p.ws.detach().clone().requires_grad_(True)
    bs = p.bs.detach().clone().requires_grad_(True) if p.bs is not None else None
    kwargs.setdefault("student_bias", bs)
    if "teacher_topk" not in kwargs:
        kwargs.setdefault("teacher_bias", p.bt)
        teacher = (p.xt, p.wt)
    else:
        teacher = (None, None)
    loss = fn(xs, ws, *teacher, p.target, **kwargs)
    total = (loss * upstream).sum() if upstream is not None else loss
    leaves = [xs, ws] + ([bs] if bs is not None else [])
    grads = torch.autograd.grad(total, leaves)
    return (loss.detach(), *grads)


def check(backend, p: Problem, upstream=None, rtol=1e-9, atol=1e-11, **kwargs):
    fused = loss_and_grads(F.fused_linear_kd, p, upstream, backend=backend, **kwargs)
    kwargs.pop("chunk_size", None)
    ref = loss_and_grads(reference_flkd, p, upstream, **kwargs)
    for name, a, b in zip(("loss", "d hidden", "d weight", "d bias"), fused, ref, strict=False):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
    return fused


def float64_backends():
    return [b for b in BACKENDS if device_of(b) == "cpu"]


@pytest.mark.parametrize("backend", float64_backends())
@pytest.mark.parametrize("divergence,ka", list(itertools.product(DIVERGENCES, ["none", "ps", "lsr"])))
def test_divergences_and_ka_float64(backend, divergence, ka):
    p = Problem()
    tau = torch.rand(13, dtype=torch.float64) * 2 + 0.5
    check(
        backend,
        p,
        divergence=divergence,
        beta=0.3,
        temperature=tau,
        ka=ka,
        ce_weight=0.5,
        vocab_size=p.vocab,
        chunk_size=5,
    )


TEMPERATURES = ["float", "tensor", "dtd-flsw", "dtd-cwsm"]


def temperature_kwargs(kind: str, rows: int) -> dict:
    if kind == "float":
        return {"temperature": 1.7}
    if kind == "tensor":
        return {"temperature": torch.rand(rows, dtype=torch.float64) * 2 + 0.5}
    return {"temperature": "dtd", "dtd_mode": kind.split("-")[1], "dtd_t0": 2.0, "dtd_beta": 1.5}


@pytest.mark.parametrize("backend", float64_backends())
@pytest.mark.parametrize("kind,ka", list(itertools.product(TEMPERATURES, ["none", "ps", "lsr"])))
def test_temperature_kinds_float64(backend, kind, ka):
    p = Problem()
    check(
        backend,
        p,
        divergence="forward_kl",
        ka=ka,
        vocab_size=p.vocab,
        chunk_size=4,
        **temperature_kwargs(kind, 13),
    )


@pytest.mark.parametrize("backend", float64_backends())
@pytest.mark.parametrize(
    "divergence,reduction", list(itertools.product(DIVERGENCES, ["mean", "sum", "none"]))
)
def test_reductions_float64(backend, divergence, reduction):
    p = Problem(n=11)
    upstream = torch.rand(11, dtype=torch.float64) + 0.5 if reduction == "none" else None
    check(
        backend,
        p,
        upstream,
        divergence=divergence,
        beta=0.6,
        temperature=2.0,
        ce_weight=0.25,
        reduction=reduction,
        vocab_size=p.vocab,
        chunk_size=3,
    )


@pytest.mark.parametrize("backend", float64_backends())
@pytest.mark.parametrize(
    "divergence,kind", list(itertools.product(DIVERGENCES, ["float", "tensor", "dtd-cwsm"]))
)
def test_topk_teacher_float64(backend, divergence, kind):
    p = Problem(pad_s=0)
    check(
        backend,
        p,
        divergence=divergence,
        beta=0.4,
        ce_weight=0.3,
        teacher_topk=p.topk(6),
        chunk_size=5,
        **temperature_kwargs(kind, 13),
    )


@pytest.mark.parametrize("backend", float64_backends())
def test_topk_at_temperature_one_buckets_are_the_teachers_probabilities(backend):
    """At tau = 1 the teacher's buckets are exp(logprobs) and 1 - their sum: forward KL on them."""
    p = Problem(n=5, pad_s=0, bias=False)
    ids, logprobs = p.topk(4)
    loss = F.fused_linear_kd(
        p.xs,
        p.ws,
        target=None,
        teacher_topk=(ids, logprobs),
        temperature=1.0,
        reduction="none",
        backend=backend,
    )
    log_q = (p.xs @ p.ws.T).log_softmax(dim=1)
    listed_q = log_q.gather(1, ids)
    tail_q = torch.log1p(-listed_q.exp().sum(dim=1))
    listed_p = logprobs
    tail_p = torch.log1p(-logprobs.exp().sum(dim=1))
    expected = (listed_p.exp() * (listed_p - listed_q)).sum(dim=1) + tail_p.exp() * (tail_p - tail_q)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", float64_backends())
def test_gradcheck(backend):
    p = Problem(n=4, hs=3, ht=4, vocab=7, pad_s=1, pad_t=0)
    xs = p.xs.clone().requires_grad_(True)
    ws = p.ws.clone().requires_grad_(True)
    bs = p.bs.clone().requires_grad_(True)
    for reduction in ("mean", "none"):

        def loss(x, w, b, reduction=reduction):
            return F.fused_linear_kd(
                x,
                w,
                p.xt,
                p.wt,
                p.target,
                divergence="jsd",
                temperature=1.5,
                ce_weight=0.4,
                reduction=reduction,
                vocab_size=7,
                chunk_size=3,
                backend=backend,
                student_bias=b,
                teacher_bias=p.bt,
            )

        assert torch.autograd.gradcheck(loss, (xs, ws, bs), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", float64_backends())
def test_padded_vocabulary_is_left_out(backend):
    """Columns past vocab_size do not exist: padding rows of any value change nothing and get
    zero gradient."""
    p = Problem(pad_s=4, pad_t=2)
    loss, _, dw, db = check(backend, p, divergence="reverse_kl", vocab_size=p.vocab, temperature=2.0)
    assert (dw[p.vocab :] == 0).all() and (db[p.vocab :] == 0).all()
    p.ws[p.vocab :] = 1e4
    again = loss_and_grads(
        F.fused_linear_kd, p, divergence="reverse_kl", vocab_size=p.vocab, temperature=2.0, backend=backend
    )
    torch.testing.assert_close(again[0], loss)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_rows_and_all_ignored(backend):
    """Ignored rows get no gradient; a batch of ignored rows only has loss 0 and zero gradients
    (the mean divides by max(1, rows kept))."""
    p = Problem(n=6, dtype=torch.float32, device=device_of(backend))
    p.target[:] = -100
    p.target[2] = 4
    loss, dx, dw, db = loss_and_grads(
        F.fused_linear_kd, p, vocab_size=p.vocab, backend=backend, ce_weight=1.0
    )
    assert torch.isfinite(loss) and (dx[[0, 1, 3, 4, 5]] == 0).all() and dx[2].abs().sum() > 0
    p.target[2] = -100
    loss, dx, dw, db = loss_and_grads(F.fused_linear_kd, p, vocab_size=p.vocab, backend=backend)
    assert loss == 0 and (dx == 0).all() and (dw == 0).all() and (db == 0).all()


SHAPES = [(1, 1, 1, 1), (2, 3, 1, 2), (5, 1, 4, 17), (7, 5, 3, 2049)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,hs,ht,vocab", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_shapes_and_dtypes(backend, n, hs, ht, vocab, dtype):
    """Odd shapes and every dtype, within twice the error of the reference at the same precision
    (tests/tolerance.py), chunks of 2 rows so that dW sums several of them."""
    device = device_of(backend)
    p = Problem(n, hs, ht, vocab, pad_s=0, pad_t=0, dtype=dtype, device=device)
    kwargs = dict(divergence="jsd", temperature=2.0, ka="ps", ce_weight=0.2)
    fused = loss_and_grads(F.fused_linear_kd, p, backend=backend, chunk_size=2, **kwargs)
    same = loss_and_grads(reference_flkd, p, **kwargs)
    p64 = Problem(n, hs, ht, vocab, pad_s=0, pad_t=0, dtype=dtype, device=device)
    for name in ("xs", "ws", "bs", "xt", "wt", "bt"):
        setattr(p64, name, getattr(p, name).double().cpu())
    p64.target = p.target.cpu()
    truth = loss_and_grads(reference_flkd, p64, **kwargs)
    assert [g.dtype for g in fused[1:]] == [dtype] * 3
    for name, a, b, c in zip(("loss", "d hidden", "d weight", "d bias"), fused, same, truth, strict=True):
        assert_close_to_truth(a, b, c, dtype, f"{backend} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_leading_dimensions_and_reduction_none(backend):
    """(B, T, H) hidden states and (B, T) labels: reduction none gives (B, T)."""
    device = device_of(backend)
    p = Problem(n=12, dtype=torch.float32, device=device, pad_s=0, pad_t=0)
    xs, xt, y = p.xs.reshape(3, 4, -1), p.xt.reshape(3, 4, -1), p.target.reshape(3, 4)
    rows = F.fused_linear_kd(
        xs, p.ws, xt, p.wt, y, reduction="none", backend=backend, student_bias=p.bs, teacher_bias=p.bt
    )
    flat = F.fused_linear_kd(
        p.xs,
        p.ws,
        p.xt,
        p.wt,
        p.target,
        reduction="none",
        backend=backend,
        student_bias=p.bs,
        teacher_bias=p.bt,
    )
    assert rows.shape == (3, 4)
    torch.testing.assert_close(rows.reshape(-1), flat)


@pytest.mark.parametrize("backend", float64_backends())
def test_without_target_and_without_bias(backend):
    p = Problem(bias=False)
    p.target = None
    check(
        backend, p, divergence="skew_reverse_kl", beta=0.2, temperature=3.0, vocab_size=p.vocab, chunk_size=6
    )


def test_gradients_only_where_asked():
    """A frozen hidden state (or weight) gets no gradient and costs no matmul."""
    p = Problem(dtype=torch.float32, bias=False)
    w = p.ws.clone().requires_grad_(True)
    loss = F.fused_linear_kd(p.xs, w, p.xt, p.wt, p.target, vocab_size=p.vocab, backend="cpu")
    (dw,) = torch.autograd.grad(loss, w)
    x = p.xs.clone().requires_grad_(True)
    loss = F.fused_linear_kd(x, p.ws, p.xt, p.wt, p.target, vocab_size=p.vocab, backend="cpu")
    (dx,) = torch.autograd.grad(loss, x)
    ref = loss_and_grads(reference_flkd, p, vocab_size=p.vocab, student_bias=None)
    torch.testing.assert_close(dx, ref[1])
    torch.testing.assert_close(dw, ref[2])
    with torch.no_grad():
        torch.testing.assert_close(
            F.fused_linear_kd(p.xs, p.ws, p.xt, p.wt, p.target, vocab_size=p.vocab), ref[0]
        )


def test_teacher_gram_cache_follows_the_teacher():
    """flsw's cached teacher Gram matrix is recomputed when the teacher weight changes in place."""
    p = Problem(dtype=torch.float64)
    kwargs = dict(temperature="dtd", dtd_t0=2.0, vocab_size=p.vocab, student_bias=p.bs, teacher_bias=p.bt)
    first = F.fused_linear_kd(p.xs, p.ws, p.xt, p.wt, p.target, backend="cpu", **kwargs)
    torch.testing.assert_close(first, reference_flkd(p.xs, p.ws, p.xt, p.wt, p.target, **kwargs))
    with torch.no_grad():
        p.wt.mul_(1.7).add_(0.3)
    second = F.fused_linear_kd(p.xs, p.ws, p.xt, p.wt, p.target, backend="cpu", **kwargs)
    torch.testing.assert_close(second, reference_flkd(p.xs, p.ws, p.xt, p.wt, p.target, **kwargs))
    assert not torch.equal(first, second)


def test_autocast_casts_like_linear():
    p = Problem(dtype=torch.float32, pad_s=0, pad_t=0, bias=False)
    w = p.ws.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.fused_linear_kd(p.xs, w, p.xt, p.wt, p.target, backend="cpu")
    loss.backward()
    assert w.grad is not None and w.grad.dtype == torch.float32
    ref = reference_flkd(p.xs.bfloat16(), p.ws.bfloat16(), p.xt.bfloat16(), p.wt.bfloat16(), p.target)
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)


def driver_args(p: Problem, reduction=0, grads=(True, True, True), dtd_mode=-1):
    tau = torch.full((p.xs.shape[0],), 2.0, dtype=p.xs.dtype)
    return (
        p.xs.detach().clone().requires_grad_(grads[0]),
        p.ws.detach().clone().requires_grad_(grads[1]),
        p.bs.detach().clone().requires_grad_(grads[2]),
        p.xt,
        p.wt,
        p.bt,
        None,
        None,
        p.target,
        tau,
        None,
        2,
        0.5,
        1,
        0.9,
        True,
        0.5,
        -100,
        reduction,
        p.vocab,
        4,
        dtd_mode,
        2.0,
        1.0,
        2.0,
        0.1,
        *grads,
        "cpu",
    )


@pytest.mark.parametrize("reduction", [0, 2])
@pytest.mark.parametrize("dtd_mode", [-1, 0])
def test_opcheck_driver(reduction, dtd_mode):
    if "cpu" not in BACKENDS:
        pytest.skip("the C++ row op is not built")
    p = Problem(dtype=torch.float32)
    torch.library.opcheck(
        torch.ops.tskd_fast.fused_linear_kd.default, driver_args(p, reduction, dtd_mode=dtd_mode)
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("temperature", [2.0, "dtd"])
def test_torch_compile_fullgraph_matches_eager(reduction, temperature):
    if "cpu" not in BACKENDS:
        pytest.skip("the C++ row op is not built")
    p = Problem(dtype=torch.float32, pad_s=0, pad_t=0)

    def step(x, w, b):
        loss = F.fused_linear_kd(
            x,
            w,
            p.xt,
            p.wt,
            p.target,
            divergence="jsd",
            temperature=temperature,
            ka="ps",
            ce_weight=0.3,
            reduction=reduction,
            chunk_size=5,
            backend="cpu",
            student_bias=b,
            teacher_bias=p.bt,
        )
        return loss.sum()

    # inductor once; aot_eager (the same tracing of the op, no code generation) for the rest
    inductor = reduction == "mean" and temperature == 2.0
    compiled = torch.compile(step, fullgraph=True, backend="inductor" if inductor else "aot_eager")
    leaves = [t.clone().requires_grad_(True) for t in (p.xs, p.ws, p.bs)]
    leaves_c = [t.clone().requires_grad_(True) for t in (p.xs, p.ws, p.bs)]
    eager = step(*leaves)
    eager.backward()
    traced = compiled(*leaves_c)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    for a, b in zip(leaves_c, leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_module_takes_modules_or_weights_and_shifts_labels():
    torch.manual_seed(0)
    student_head = torch.nn.Linear(6, 20)
    teacher_head = torch.nn.Linear(8, 20, bias=False)
    hs, ht = torch.randn(2, 5, 6), torch.randn(2, 5, 8)
    labels = torch.randint(0, 20, (2, 5))
    labels[0, 3] = -100
    loss_fn = FusedLinearKDLoss(
        divergence="reverse_kl", temperature="dtd", dtd_t0=2.0, shift_labels=True, backend="cpu"
    )
    loss = loss_fn(hs, student_head, ht, teacher_head, labels)
    loss.backward()
    assert loss_fn.last_temperature.shape == (2, 4)
    expected = reference_flkd(
        hs[:, :-1].reshape(-1, 6),
        student_head.weight,
        ht[:, :-1].reshape(-1, 8),
        teacher_head.weight,
        labels[:, 1:].reshape(-1),
        student_bias=student_head.bias,
        divergence="reverse_kl",
        temperature="dtd",
        dtd_t0=2.0,
    )
    torch.testing.assert_close(loss, expected)
    assert teacher_head.weight.grad is None and student_head.weight.grad is not None
    assert student_head.bias.grad is not None
    with_weights = FusedLinearKDLoss(
        divergence="reverse_kl", temperature="dtd", dtd_t0=2.0, shift_labels=True
    )
    torch.testing.assert_close(
        with_weights(hs, student_head.weight, ht, teacher_head.weight, labels),
        reference_flkd(
            hs[:, :-1].reshape(-1, 6),
            student_head.weight,
            ht[:, :-1].reshape(-1, 8),
            teacher_head.weight,
            labels[:, 1:].reshape(-1),
            divergence="reverse_kl",
            temperature="dtd",
            dtd_t0=2.0,
        ),
    )
    with pytest.raises(ValueError, match="student_lm_head must be an nn.Module"):
        loss_fn(hs, "head", ht, teacher_head, labels)
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(hs, student_head, ht, teacher_head, labels), loss)
    assert loss_fn.last_temperature.shape == (2, 4)


def bad_call(**changes):
    p = Problem(dtype=torch.float32, n=6, pad_s=0, pad_t=0)
    args = dict(
        student_hidden=p.xs,
        student_weight=p.ws,
        teacher_hidden=p.xt,
        teacher_weight=p.wt,
        target=p.target,
    )
    args.update(changes)
    return F.fused_linear_kd(**args)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_bad_inputs_name_the_argument(backend):
    """One check for every backend: the driver op's spec check runs on the reference path too."""
    if backend == "cpu" and "cpu" not in BACKENDS:
        pytest.skip("the C++ row op is not built")
    p = Problem(dtype=torch.float32, n=6, pad_s=0, pad_t=0)
    ids, logprobs = p.topk(3)
    cases = [
        (dict(student_weight=p.ws[:, :2]), "student_weight must have shape"),
        (dict(teacher_hidden=p.xt[:4]), "teacher_hidden has rows of shape"),
        (dict(teacher_weight=torch.randn(40, 9)), "vocab_size is None but student_weight has 37 rows"),
        (dict(vocab_size=50), "vocab_size = 50 exceeds"),
        (dict(teacher_hidden=None), "teacher_hidden is None"),
        (dict(teacher_hidden=None, teacher_weight=None), "a teacher is needed"),
        (dict(teacher_topk=(ids, logprobs)), "either teacher_hidden and teacher_weight or teacher_topk"),
        (
            dict(
                teacher_hidden=None,
                teacher_weight=None,
                teacher_topk=(torch.arange(38).expand(6, 38), torch.full((6, 38), -4.0)),
            ),
            "K = 38 ids per row, more than the vocabulary",
        ),
        (
            dict(teacher_hidden=None, teacher_weight=None, teacher_topk=(ids + 40, logprobs)),
            r"ids\[0, 0\] = \d+ is out of range",
        ),
        (
            dict(teacher_hidden=None, teacher_weight=None, teacher_topk=(ids[:, [0, 0, 1]], logprobs)),
            "lists id .* twice",
        ),
        (
            dict(teacher_hidden=None, teacher_weight=None, teacher_topk=(ids, logprobs), ka="ps"),
            "ka='ps' is not defined with teacher_topk",
        ),
        (
            dict(teacher_hidden=None, teacher_weight=None, teacher_topk=(ids, logprobs), temperature="dtd"),
            "dtd_mode='flsw' is not defined with teacher_topk",
        ),
        (
            dict(teacher_hidden=None, teacher_weight=None, teacher_topk=(ids, -logprobs)),
            "must be log-probabilities",
        ),
        (dict(target=torch.full((6,), 37)), r"target\[0\] = 37 is out of range"),
        (dict(target=p.target[:3]), "target must have shape"),
        (dict(target=None, ka="lsr"), "ka='lsr' needs target labels"),
        (dict(target=None, ce_weight=1.0), "ce_weight != 0 needs target labels"),
        (dict(divergence="kl"), "divergence must be one of"),
        (dict(divergence="jsd", beta=1.0), r"beta must be in \(0.0, 1.0\)"),
        (dict(divergence="skew_forward_kl", beta=-0.1), r"beta must be in \[0.0, 1.0\)"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(temperature=torch.ones(5)), "temperature must be a float, a 0-d tensor or a tensor of shape"),
        (dict(temperature=torch.tensor([1.0, 1, 1, -1, 1, 1])), "temperature must be finite and > 0"),
        (dict(temperature="hot"), "temperature must be a float, a tensor or 'dtd'"),
        (dict(temperature="dtd", dtd_mode="max"), "dtd_mode must be one of"),
        (dict(temperature="dtd", dtd_t0=-1.0), "dtd_t0 must be in"),
        (dict(reduction="batchmean"), "reduction must be one of"),
        (dict(ka="swap"), "ka must be one of"),
        (dict(chunk_size=0), "chunk_size must be a positive int"),
        (
            dict(student_hidden=p.xs.double()),
            "student_weight is torch.float32 but student_hidden is torch.float64",
        ),
        (dict(student_hidden=p.xs.long()), "student_hidden must be float32"),
        (dict(student_bias=torch.zeros(3)), r"student_bias must have shape \(V,\)"),
        (dict(backend="gpu"), "backend must be one of"),
    ]
    for changes, message in cases:
        changes.setdefault("backend", backend)
        with pytest.raises(ValueError, match=message):
            bad_call(**changes)


def test_cuda_path_reads_no_value_on_the_host():
    """The driver, its DTD temperatures, the argument checks and the backward on (fake) CUDA
    tensors: a fake tensor has no values, so any host read (a stream sync on a GPU) would raise.
    Runs without a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tskd_fast.ops import fused_linear_kd_driver as driver
    from tskd_fast.ops.fused_linear_kd_checks import check_fused_linear_kd, convert

    class Ctx:
        """What the driver's setup_context and backward use of an autograd context."""

        needs_input_grad = (True, True, True)

        def mark_non_differentiable(self, *tensors):
            pass

        def set_materialize_grads(self, value):
            pass

        def save_for_backward(self, *tensors):
            self.saved_tensors = tensors

    with FakeTensorMode():
        d = "cuda"
        xs, ws, bs = torch.randn(13, 6, device=d), torch.randn(40, 6, device=d), torch.randn(40, device=d)
        xt, wt, bt = torch.randn(13, 9, device=d), torch.randn(42, 9, device=d), torch.randn(42, device=d)
        y = torch.randint(0, 37, (13,), device=d)
        tau = torch.full((13,), 2.0, device=d)
        with pytest.raises(Exception, match="_local_scalar_dense"):
            int((y != -100).sum())  # the control: a host read raises here
        checked = convert(xs, ws, xt, wt, y, "jsd", tau, "ps", "mean", 37, 4, bs, bt, None, "tau2", "flsw")
        assert checked.vocab == 37 and checked.divergence == ops_flkd.DIVERGENCES["jsd"]
        for dtd_mode, ka in ((-1, 1), (0, 1), (1, 0)):
            args = (xs, ws, bs, xt, wt, bt, None, None, y, tau, None, 2, 0.5, ka, 0.9, True, 0.5, -100)
            flags = (37, 4, dtd_mode, 2.0, 1.0, 2.0, 0.1, True, True, True, "cuda")
            check_fused_linear_kd(*args, 0, *flags)
            loss, used, dh, dw, db = driver.fused_linear_kd_forward(*args, 0, *flags)
            ctx = Ctx()
            ops_flkd.fused_linear_kd_setup_context(ctx, (*args, 0, *flags), (loss, used, dh, dw, db))
            grads = ops_flkd.fused_linear_kd_backward(ctx, torch.ones((), device=d), None, None, None, None)
            assert [tuple(g.shape) for g in grads[:3]] == [(13, 6), (40, 6), (40,)]
            rows, used, *_ = driver.fused_linear_kd_forward(*args, 2, *flags)
            dh, dw, db = driver.fused_linear_kd_backward(
                torch.ones(13, device=d), used, *args, 2, *flags, True, True, True
            )
            assert rows.shape == (13,) and dw.dtype == ws.dtype and db.shape == (40,)
