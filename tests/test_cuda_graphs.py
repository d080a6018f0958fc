"""On a GPU: the fused ops, the modules and every method's whole training step never synchronise
with the host and can be captured in a CUDA graph, whose replays on new inputs give the eager
results (``make gpu-check`` runs this file first). The CPU counterpart, the traced graphs of every
step without a host read, is test_compile_step.py.

* Host syncs: the calls run under ``torch.cuda.set_sync_debug_mode("error")``, which raises on any
  synchronising call (``.item()``, ``bool(tensor)``, a blocking copy, a value-dependent shape).
* CUDA graphs: forward and backward (``torch.autograd.grad``, so the gradients are graph outputs)
  captured with ``torch.cuda.graph`` after a warm-up on a side stream; then new values are copied
  into the static inputs, the graph replayed, and its outputs compared with an eager call.
"""

from collections.abc import Callable

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tiny_steps import METHODS, batch, tiny_distiller
from tskd_fast import functional as F
from tskd_fast.nn import ConvLSTM, DTDKDLoss, HCLLoss, KDLoss, LearnedAugmentation, ReviewKDFusion, TSKDReview

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and syncs need a GPU")
CUDA_BACKENDS = [b for b in kernel_backends() if device_of(b) == "cuda"]


def no_sync(fn: Callable[[], object]) -> object:
    """fn() with every host synchronisation an error."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _grads(outputs, params):
    loss = sum(o.float().sum() for o in outputs if o.requires_grad)
    return torch.autograd.grad(loss, params, allow_unused=True)


def check_capture(run: Callable[[], tuple], inputs: list[torch.Tensor], fresh: list[torch.Tensor]) -> None:
    """Capture run() (reading the static `inputs`), replay it on `fresh` values copied into them,
    and compare with run() called eagerly on those values. run returns a tuple of tensors."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            no_sync(run)  # warm-up: lazy initialisation, cuDNN / Triton autotuning
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run()
    with torch.no_grad():
        for static, value in zip(inputs, fresh, strict=True):
            static.copy_(value)
    graph.replay()
    torch.cuda.synchronize()
    expected = run()
    for i, (got, want) in enumerate(zip(static_out, expected, strict=True)):
        if want is None:
            assert got is None, i
            continue
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=f"output {i}")


def _randn(*shape, **kw):
    return torch.randn(*shape, device="cuda", **kw)


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_fused_ops_capture_without_a_sync(backend):
    s, t = _randn(8, 100, requires_grad=True), _randn(8, 100)
    y = torch.randint(0, 100, (8,), device="cuda")
    gates, c = _randn(2, 32, 5, 5, requires_grad=True), _randn(2, 8, 5, 5, requires_grad=True)
    peep = _randn(8, 5, 5, requires_grad=True)
    x, r = _randn(2, 8, 8, 8, requires_grad=True), _randn(2, 8, 4, 4, requires_grad=True)
    w, bias = _randn(2, 16, requires_grad=True), _randn(2, requires_grad=True)
    fs, ft = _randn(2, 8, 8, 8, requires_grad=True), _randn(2, 8, 8, 8)
    inputs = [s, t, y, gates, c, peep, x, r, w, bias, fs, ft]

    def run():
        tau = F.dtd_temperature(s, t, target=y, ka="ps", backend=backend)
        kd = F.kd_loss(s, t, y, temperature=tau, ka="ps", ce_weight=0.1, backend=backend)
        h, c_new = F.convlstm_gates(gates, c, peep, peep, peep, backend=backend)
        fused = F.abf_fuse(x, r, w, bias, backend=backend)
        hcl = F.hcl_loss([fs], [ft], backend=backend)
        outs = (kd, h, c_new, fused, hcl)
        return (tau, *outs, *_grads(outs, [s, gates, c, peep, x, r, w, bias, fs]))

    fresh = [torch.randn_like(v) if v.is_floating_point() else torch.randint_like(v, 100) for v in inputs]
    check_capture(run, inputs, fresh)


def test_modules_capture_without_a_sync():
    torch.manual_seed(0)
    kd, dtd, hcl = KDLoss(), DTDKDLoss(ka="ps").cuda(), HCLLoss()
    fusion = ReviewKDFusion([8, 16, 16], [8, 16, 16], mid_channel=8).cuda()
    lstm = ConvLSTM(4, 6, 3, num_layers=2, peephole=True, spatial_size=(5, 5)).cuda()
    review = TSKDReview([(8, 8), (4, 4)], hidden_channels=[4, 4]).cuda()
    augment = LearnedAugmentation(temperature=1.0, seed=0).cuda()
    s, t = _randn(8, 10, requires_grad=True), _randn(8, 10)
    y = torch.randint(0, 10, (8,), device="cuda")
    feats = [
        _randn(2, 8, 8, 8, requires_grad=True),
        _randn(2, 16, 4, 4, requires_grad=True),
        _randn(2, 16, requires_grad=True),
    ]
    teacher = [_randn(2, 8, 8, 8), _randn(2, 16, 4, 4), _randn(2, 16, 1, 1)]
    seq = _randn(3, 2, 4, 5, 5, requires_grad=True)
    snaps = [[_randn(2, 1, 8, 8), _randn(2, 1, 4, 4)] for _ in range(3)]
    student_maps = [_randn(2, 6, 8, 8, requires_grad=True), _randn(2, 6, 4, 4, requires_grad=True)]
    teacher_maps = [_randn(2, 12, 8, 8), _randn(2, 12, 4, 4)]
    images = _randn(4, 3, 16, 16)
    draw = augment.draw().packed("cuda")
    inputs = [s, t, y, *feats, *teacher, seq, *sum(snaps, []), *student_maps, *teacher_maps, images, draw]
    params = [p for m in (fusion, lstm, review, augment) for p in m.parameters()]

    def run():
        fused = fusion(feats)
        outs = (
            kd(s, t),
            dtd(s, t, y),
            hcl(fused, teacher),
            lstm(seq)[0],
            review(snaps, student_maps, teacher_maps),
            augment.forward_packed(images, draw),
        )
        return (*outs, *_grads(outs, [s, *feats, seq, *student_maps, *params]))

    fresh = [v.clone() for v in inputs]
    for v in fresh[:-1]:
        if v.is_floating_point():
            v.normal_()
    fresh[-1] = augment.draw(torch.Generator().manual_seed(5)).packed("cuda")  # another draw
    check_capture(run, inputs, fresh)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_whole_training_step_captures_without_a_sync(method):
    d, epoch = tiny_distiller(method, "cuda")
    x, y = batch(8, "cuda")
    draws = d.step_inputs(x, y)  # tst: the augmentation draw, packed on the GPU
    inputs = [x, y, *draws.values()]
    params = [p for p in d.parameters() if p.requires_grad]
    d.loss_scales()

    def run():
        logits, losses = d.forward_train(x, y, epoch=epoch, progress=0.5, **draws)
        total = sum(losses.values())
        return (logits, total, *torch.autograd.grad(total, params, allow_unused=True))

    fresh_x, fresh_y = torch.randn_like(x), torch.randint_like(y, 10)
    # In training mode the outputs depend on the batch statistics only, not on the running ones
    # that every call (eager or replayed) moves, so the replay and the eager call can be compared.
    check_capture(run, inputs, [fresh_x, fresh_y, *d.step_inputs(fresh_x, fresh_y).values()])
