"""Every fused convlstm_gates backend against the PyTorch reference: values and gradients.

Odd sizes, with and without (some) peepholes, NCHW and channels_last, every dtype, dh-only and
dc-only incoming gradients. The tolerance rule is tests/tolerance.py's: at most twice PyTorch's
own error at the same precision against a float64 truth.
"""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast import functional as F

BACKENDS = kernel_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no fused backend built")

GRAD_NAMES = ("gates", "c_prev", "w_ci", "w_cf", "w_co")


def dtypes_of(backend):
    return [torch.float32, torch.float16, torch.bfloat16] + (
        [torch.float64] if device_of(backend) == "cpu" else []
    )


def make_inputs(batch, hidden, height, width, dtype, device, peepholes="all", channels_last=False):
    """Random gates (spread so every gate saturates somewhere), c_prev and peepholes."""
    gates = torch.randn(batch, 4 * hidden, height, width, dtype=torch.float64) * 2.5
    c_prev = torch.randn(batch, hidden, height, width, dtype=torch.float64) * 1.5
    ws = [torch.randn(hidden, height, width, dtype=torch.float64) * 0.7 for _ in range(3)]
    if peepholes == "none":
        ws = [None, None, None]
    elif peepholes == "some":
        ws = [ws[0].unsqueeze(0), None, ws[2]]
    gates, c_prev = gates.to(device=device, dtype=dtype), c_prev.to(device=device, dtype=dtype)
    if channels_last:
        gates = gates.contiguous(memory_format=torch.channels_last)
        c_prev = c_prev.contiguous(memory_format=torch.channels_last)
    ws = [w.to(device=device, dtype=dtype) if w is not None else None for w in ws]
    return gates, c_prev, ws


def _dot(out, weight):
    acc = torch.float64 if out.dtype == torch.float64 else torch.float32
    return (out.to(acc) * weight.to(acc)).sum()


def run(backend, gates, c_prev, ws, dh, dc):
    """(h, c) and the gradients of sum(h * dh) + sum(c * dc) (a None weight leaves that output out)."""
    leaves = [
        t.detach().clone().requires_grad_(True) if t is not None else None for t in (gates, c_prev, *ws)
    ]
    h, c = F.convlstm_gates(*leaves, backend=backend)
    total = sum(_dot(out, w) for out, w in ((h, dh), (c, dc)) if w is not None)
    present = [t for t in leaves if t is not None]
    # With c alone used, w_co takes no part in the reference's graph: its gradient is zero.
    grads = torch.autograd.grad(total, present, allow_unused=True)
    grads = iter(g if g is not None else torch.zeros_like(t) for g, t in zip(grads, present, strict=True))
    return h.detach(), c.detach(), [next(grads) if t is not None else None for t in leaves]


def check_against_reference(backend, gates, c_prev, ws, dh, dc):
    dtype = gates.dtype
    h, c, grads = run(backend, gates, c_prev, ws, dh, dc)
    h_ref, c_ref, grads_ref = run("reference", gates, c_prev, ws, dh, dc)
    ws64 = [w.double() if w is not None else None for w in ws]
    dh64 = dh.double() if dh is not None else None
    dc64 = dc.double() if dc is not None else None
    h64, c64, grads64 = run("reference", gates.double(), c_prev.double(), ws64, dh64, dc64)
    assert h.dtype == dtype and c.dtype == dtype
    assert_close_to_truth(h, h_ref, h64, dtype, f"{backend} h")
    assert_close_to_truth(c, c_ref, c64, dtype, f"{backend} c")
    for name, g, g_ref, g64 in zip(GRAD_NAMES, grads, grads_ref, grads64, strict=True):
        if g64 is None:
            assert g is None
            continue
        assert g.dtype == dtype and g.shape == g64.shape, name
        assert_close_to_truth(g, g_ref, g64, dtype, f"{backend} d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peepholes", ["none", "all", "some"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_reference_float32(backend, peepholes, channels_last):
    device = device_of(backend)
    gates, c_prev, ws = make_inputs(3, 5, 7, 9, torch.float32, device, peepholes, channels_last)
    dh = torch.randn(c_prev.shape, device=device)
    dc = torch.randn(c_prev.shape, device=device)
    check_against_reference(backend, gates, c_prev, ws, dh, dc)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_reference_every_dtype(backend, channels_last):
    device = device_of(backend)
    for dtype in dtypes_of(backend):
        gates, c_prev, ws = make_inputs(2, 6, 5, 3, dtype, device, "all", channels_last)
        dh = torch.randn(c_prev.shape, device=device).to(dtype)
        dc = torch.randn(c_prev.shape, device=device).to(dtype)
        check_against_reference(backend, gates, c_prev, ws, dh, dc)
        gates, c_prev, ws = make_inputs(2, 6, 5, 3, dtype, device, "none", channels_last)
        check_against_reference(backend, gates, c_prev, ws, dh, dc)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["h", "c"])
def test_one_output_used(backend, which):
    """Only h (or only c) reaches the loss: the other gradient is absent, read as zero."""
    device = device_of(backend)
    gates, c_prev, ws = make_inputs(3, 4, 5, 7, torch.float32, device, "all")
    incoming = torch.randn(c_prev.shape, device=device)
    dh, dc = (incoming, None) if which == "h" else (None, incoming)
    check_against_reference(backend, gates, c_prev, ws, dh, dc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_larger_sizes_cover_vector_bodies_and_tails(backend):
    """Rows longer than one tile (NCHW) and channel counts off the vector width (channels_last)."""
    device = device_of(backend)
    big = (2, 19, 13, 11) if backend != "triton" or device == "cuda" else (2, 9, 13, 11)
    for channels_last in (False, True):
        gates, c_prev, ws = make_inputs(*big, torch.float32, device, "all", channels_last)
        dh = torch.randn(c_prev.shape, device=device)
        dc = torch.randn(c_prev.shape, device=device)
        check_against_reference(backend, gates, c_prev, ws, dh, dc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_layouts_and_strided_inputs(backend):
    """channels_last gates with NCHW c_prev, and gates sliced from a larger tensor."""
    device = device_of(backend)
    gates, c_prev, ws = make_inputs(2, 3, 4, 5, torch.float32, device, "some", channels_last=True)
    dh = torch.randn(c_prev.shape, device=device)
    check_against_reference(backend, gates, c_prev.contiguous(), ws, dh, None)
    wide = torch.randn(2, 13, 4, 5, device=device)
    check_against_reference(backend, wide[:, 1:], c_prev.contiguous(), ws, dh, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_follow_the_layout_of_gates(backend):
    device = device_of(backend)
    for channels_last in (False, True):
        gates, c_prev, ws = make_inputs(2, 3, 4, 5, torch.float32, device, "none", channels_last)
        h, c = F.convlstm_gates(gates, c_prev, backend=backend)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert h.is_contiguous(memory_format=fmt) and c.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_peephole_gradient_is_deterministic(backend):
    device = device_of(backend)
    gates, c_prev, ws = make_inputs(9, 4, 3, 5, torch.float32, device, "all")
    dh = torch.randn(c_prev.shape, device=device)
    first = run(backend, gates, c_prev, ws, dh, None)[2]
    second = run(backend, gates, c_prev, ws, dh, None)[2]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_peepholes_get_no_gradient(backend):
    device = device_of(backend)
    gates, c_prev, ws = make_inputs(2, 3, 4, 5, torch.float32, device, "all")
    g = gates.clone().requires_grad_(True)
    h, c = F.convlstm_gates(g, c_prev, *ws, backend=backend)
    (h.sum() + c.sum()).backward()
    assert all(w.grad is None for w in ws)
    ref = gates.clone().requires_grad_(True)
    h_ref, c_ref = F.convlstm_gates(ref, c_prev, *ws, backend="reference")
    (h_ref.sum() + c_ref.sum()).backward()
    torch.testing.assert_close(g.grad, ref.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    device = device_of(backend)
    gates, c_prev, ws = make_inputs(0, 3, 4, 5, torch.float32, device, "all")
    leaves = [t.clone().requires_grad_(True) for t in (gates, c_prev, *ws)]
    h, c = F.convlstm_gates(*leaves, backend=backend)
    assert h.shape == c_prev.shape and c.shape == c_prev.shape
    (h.sum() + c.sum()).backward()
    for w in leaves[2:]:
        assert torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("backend", BACKENDS)
def test_saturated_and_non_finite_pre_activations(backend):
    """Gates far into saturation, infinite or NaN: the same h and c as the reference (sigmoid and
    tanh clamp or saturate, never overflow), NaN only where the reference has NaN, and finite
    gradients wherever the pre-activations are finite."""
    device = device_of(backend)
    specials = torch.tensor([0.0, 1e-6, -3.0, 30.0, -30.0, 88.0, -88.0, 100.0, -1e4, 1e4])
    hidden, side = 3, 5
    gen = torch.Generator().manual_seed(7)
    gates = specials[torch.randint(len(specials), (2, 4 * hidden, side, side), generator=gen)]
    c_prev = torch.randn(2, hidden, side, side, generator=gen) * 3
    finite = gates.clone()
    gates[0, 0, 0, 0], gates[0, hidden, 1, 1], gates[1, 2 * hidden, 2, 2] = (
        float("inf"),
        -float("inf"),
        float("nan"),
    )
    gates[1, 3 * hidden, 3, 3] = -float("inf")
    h, c = F.convlstm_gates(gates.to(device), c_prev.to(device), backend=backend)
    h_ref, c_ref = F.convlstm_gates(gates, c_prev, backend="reference")
    torch.testing.assert_close(h.cpu(), h_ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(c.cpu(), c_ref, rtol=1e-5, atol=1e-6, equal_nan=True)

    g = finite.clone().to(device).requires_grad_()
    cp = c_prev.clone().to(device).requires_grad_()
    h, c = F.convlstm_gates(g, cp, backend=backend)
    (h.sum() + c.sum()).backward()
    g_ref = finite.clone().requires_grad_()
    cp_ref = c_prev.clone().requires_grad_()
    h_ref, c_ref = F.convlstm_gates(g_ref, cp_ref, backend="reference")
    (h_ref.sum() + c_ref.sum()).backward()
    assert torch.isfinite(g.grad).all() and torch.isfinite(cp.grad).all()
    torch.testing.assert_close(g.grad.cpu(), g_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cp.grad.cpu(), cp_ref.grad, rtol=1e-5, atol=1e-6)
