"""The CPU kernels are compiled once per vector ISA; each variant must agree with the reference."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import kernel_backends

SCRIPT = """
import torch
from tskd_fast import functional as F
assert torch.backends.cpu.get_cpu_capability() == {cap!r}, torch.backends.cpu.get_cpu_capability()
torch.manual_seed(0)
for dtype in (torch.float32, torch.bfloat16, torch.float64):
    for classes in (1, 5, 37, 300):
        z = (torch.randn(9, classes) * 3).to(dtype).requires_grad_(True)
        v = (torch.randn(9, classes) * 3).to(dtype)
        v[2, 0] = float("-inf")
        y = torch.randint(0, classes, (9,))
        y[0] = -100
        tau = torch.rand(9, dtype=torch.float64 if dtype == torch.float64 else torch.float32) + 0.5
        for ka in ("none", "ps", "lsr"):
            out = F.kd_loss(z, v, y, tau, ka=ka, ce_weight=0.3, reduction="none", backend="cpu")
            (g,) = torch.autograd.grad(out.sum(), z)
            ref = F.kd_loss(z, v, y, tau, ka=ka, ce_weight=0.3, reduction="none", backend="reference")
            (g_ref,) = torch.autograd.grad(ref.sum(), z)
            tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-5)
            tol["equal_nan"] = True  # the 1-class row with a -inf teacher is all -inf: NaN
            torch.testing.assert_close(out, ref, **tol)
            torch.testing.assert_close(g, g_ref, **tol)
        for mode in ("flsw", "cwsm"):
            w = F.dtd_weight(z, v, mode, 2.0, y, "ps", backend="cpu")
            w_ref = F.dtd_weight(z, v, mode, 2.0, y, "ps", backend="reference")
            torch.testing.assert_close(w, w_ref, rtol=2e-2 if dtype == torch.bfloat16 else 1e-4, atol=1e-5, equal_nan=True)
# ReviewKD: every NCHW tile and interleaving path (2x, equal and odd ratios; HCL tasks of 16
# planes (17 of 28x28), of 64 (65 of 8x8: one full task, one partial) and of one plane).
tol = dict(rtol=1e-4, atol=1e-4)
for dtype in (torch.float32, torch.float64):
    for n, m, h, w, yh, yw in ((2, 3, 9, 38, 5, 19), (1, 4, 6, 7, 6, 7), (2, 5, 14, 14, 1, 1), (1, 3, 10, 11, 4, 3)):
        x = torch.randn(n, m, h, w, dtype=dtype, requires_grad=True)
        y = torch.randn(n, m, yh, yw, dtype=dtype, requires_grad=True)
        wt, b = torch.randn(2, 2 * m, 1, 1, dtype=dtype) / m, torch.randn(2, dtype=dtype)
        g = torch.randn(n, m, h, w, dtype=dtype)
        got = torch.autograd.grad(F.abf_fuse(x, y, wt, b, backend="cpu"), (x, y), g)
        ref = torch.autograd.grad(F.abf_fuse(x, y, wt, b, backend="reference"), (x, y), g)
        torch.testing.assert_close(got, ref, **tol)
    for shape in ((1, 17, 28, 28), (2, 9, 7, 7), (1, 65, 8, 8), (1, 3, 36, 30)):
        s = torch.randn(shape, dtype=dtype, requires_grad=True)
        t = torch.randn(shape, dtype=dtype)
        got = torch.autograd.grad(F.hcl_loss(s, t, backend="cpu"), s)
        ref = torch.autograd.grad(F.hcl_loss(s, t, backend="reference"), s)
        torch.testing.assert_close(got, ref, **tol)
print("ok")
"""


def supported_capabilities() -> list[str]:
    order = ["DEFAULT", "AVX2", "AVX512"]
    best = torch.backends.cpu.get_cpu_capability()
    return order[: order.index(best) + 1] if best in order else ["DEFAULT"]


@pytest.mark.skipif("cpu" not in kernel_backends(), reason="tskd_fast._C is not built")
@pytest.mark.parametrize("cap", supported_capabilities())
def test_isa_variant_matches_reference(cap):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap.lower())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(cap=cap)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
