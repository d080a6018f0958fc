"""Every fused ABF-fusion backend against the PyTorch reference: forward and all four gradients,
odd sizes (1x1 residual, non-integer ratios like 3 -> 7, C not a power of two), every dtype,
NCHW and channels_last. Tolerances follow tests/tolerance.py (2x PyTorch's own error against a
float64 truth)."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast import functional as F
from tskd_fast import reference

BACKENDS = kernel_backends()
# (N, M, h, w, h', w'): a broadcast 1x1 residual, non-integer ratios, 2x, equal sizes, a ratio
# where the float scale differs from the exact floor(dst * in / out).
CASES = [
    (2, 5, 7, 7, 1, 1),
    (2, 6, 7, 7, 3, 3),
    (1, 3, 14, 14, 7, 7),
    (2, 4, 8, 6, 4, 3),
    (1, 7, 5, 9, 5, 9),
    (2, 3, 6, 7, 4, 2),
    (1, 2, 46, 3, 14, 3),  # 14 -> 46: F.interpolate's float scale reads row 6 at row 23, not 7
    # The CPU backward's tiles: exact 2x columns past one vector (19 = 16 + 3), one residual row
    # read by more rows than a tile holds, a row wider than a tile, and a tile of 64 pixels
    # (many channels) that splits a residual row's rows.
    (1, 3, 4, 38, 2, 19),
    (1, 2, 40, 40, 1, 20),
    (1, 2, 3, 530, 2, 265),
    (1, 600, 9, 50, 3, 25),
]
SMALL_CASES = CASES[:2] + CASES[3:4] + CASES[7:8]  # for the slow interpreted Triton runs and reduced dtypes


def dtypes_of(backend):
    found = [torch.float32, torch.float16, torch.bfloat16]
    if device_of(backend) == "cpu":
        found.append(torch.float64)
    return found


def make(case, device, spread=1.5):
    n, m, h, w, yh, yw = case
    x = torch.randn(n, m, h, w, dtype=torch.float64) * spread
    y = torch.randn(n, m, yh, yw, dtype=torch.float64) * spread
    weight = torch.randn(2, 2 * m, 1, 1, dtype=torch.float64) / m**0.5
    bias = torch.randn(2, dtype=torch.float64)
    grad = torch.randn(n, m, h, w, dtype=torch.float64)
    return [t.to(device) for t in (x, y, weight, bias, grad)]


def run(fn, x, y, weight, bias, grad, dtype, channels_last):
    """fused and (dx, dy, dweight, dbias) of sum(fused * grad), x and y in `dtype`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = x.to(dtype).contiguous(memory_format=fmt).requires_grad_(True)
    ys = y.to(dtype).contiguous(memory_format=fmt).requires_grad_(True)
    wdtype = torch.float64 if dtype == torch.float64 else torch.float32
    ws = weight.to(wdtype).requires_grad_(True)
    bs = bias.to(wdtype).requires_grad_(True)
    fused = fn(xs, ys, ws, bs)
    (fused.double() * grad).sum().backward()
    return fused.detach(), (xs.grad, ys.grad, ws.grad, bs.grad)


def check(backend, case, dtype, channels_last):
    device = device_of(backend)
    x, y, weight, bias, grad = make(case, device)
    fused, grads = run(
        lambda *a: F.abf_fuse(*a, backend=backend), x, y, weight, bias, grad, dtype, channels_last
    )
    assert fused.dtype == dtype
    if channels_last and case[2] * case[3] > 1:
        assert fused.is_contiguous(memory_format=torch.channels_last)
    # The reference runs on the CPU: PyTorch's CUDA nearest-upsampling backward finds the output
    # rows of each input row with a ceil rule that, where the float scale rounds (14 -> 46), is not
    # the adjoint of its own forward's floor rule; the CPU's backward is, as every fused kernel is.
    fused, grads = fused.cpu(), [g.cpu() for g in grads]
    x, y, weight, bias, grad = (t.cpu() for t in (x, y, weight, bias, grad))
    same, same_grads = run(reference.abf_fuse, x, y, weight, bias, grad, dtype, channels_last)
    truth, truth_grads = run(reference.abf_fuse, x, y, weight, bias, grad, torch.float64, False)
    assert_close_to_truth(fused, same, truth, dtype, f"{backend} fused")
    for name, got, ref, tru in zip(
        ("dx", "dy", "dweight", "dbias"), grads, same_grads, truth_grads, strict=True
    ):
        assert got.shape == tru.shape, name
        assert_close_to_truth(got, ref, tru, dtype, f"{backend} {name}")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_reference_float32(backend, case, channels_last):
    check(backend, case, torch.float32, channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SMALL_CASES)
@pytest.mark.parametrize("dtype_index", range(4))
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_reference_every_dtype(backend, case, dtype_index, channels_last):
    dtypes = dtypes_of(backend)
    if dtype_index >= len(dtypes):
        dtype_index = 0  # float64 is CPU-only: that slot runs float32 on GPU backends
    check(backend, case, dtypes[dtype_index], channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_layouts_and_strided_inputs(backend):
    """x channels_last with an NCHW residual, and a non-contiguous (sliced) x."""
    device = device_of(backend)
    x, y, weight, bias, grad = make((2, 5, 6, 6, 3, 3), device)
    x_cl = x.float().contiguous(memory_format=torch.channels_last)
    expected = reference.abf_fuse(x.float(), y.float(), weight.float(), bias.float())
    torch.testing.assert_close(
        F.abf_fuse(x_cl, y.float(), weight.float(), bias.float(), backend=backend), expected
    )
    wide = torch.randn(2, 5, 6, 9, device=device)
    sliced = wide[:, :, :, 1:7]
    torch.testing.assert_close(
        F.abf_fuse(sliced, y.float(), weight.float(), bias.float(), backend=backend),
        reference.abf_fuse(sliced, y.float(), weight.float(), bias.float()),
    )


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "cpu"])
def test_backward_is_deterministic(backend):
    x, y, weight, bias, grad = make((3, 6, 9, 9, 2, 2), "cpu")
    first = run(lambda *a: F.abf_fuse(*a, backend=backend), x, y, weight, bias, grad, torch.float32, False)[1]
    again = run(lambda *a: F.abf_fuse(*a, backend=backend), x, y, weight, bias, grad, torch.float32, False)[1]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
