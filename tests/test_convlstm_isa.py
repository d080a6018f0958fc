"""The CPU ConvLSTM gate kernels are compiled once per vector ISA; each variant must agree with the
reference (forward, gradients and peephole sums, both layouts)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import kernel_backends
from tests.test_cpu_isa_variants import supported_capabilities

SCRIPT = """
import torch
from tskd_fast import functional as F
assert torch.backends.cpu.get_cpu_capability() == {cap!r}, torch.backends.cpu.get_cpu_capability()
torch.manual_seed(0)
for dtype in (torch.float32, torch.bfloat16, torch.float64):
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    for fmt in (torch.contiguous_format, torch.channels_last):
        for shape in ((3, 5, 7, 9), (2, 17, 4, 3)):
            b, ch, hh, ww = shape
            gates = (torch.randn(b, 4 * ch, hh, ww) * 2.5).to(dtype).contiguous(memory_format=fmt)
            c_prev = torch.randn(b, ch, hh, ww).to(dtype).contiguous(memory_format=fmt)
            ws = [(torch.randn(ch, hh, ww) * 0.7).to(dtype) for _ in range(3)]
            dh, dc = torch.randn(b, ch, hh, ww).to(dtype), torch.randn(b, ch, hh, ww).to(dtype)
            results = []
            for backend in ("cpu", "reference"):
                leaves = [t.clone().requires_grad_(True) for t in (gates, c_prev, *ws)]
                h, c = F.convlstm_gates(*leaves, backend=backend)
                grads = torch.autograd.grad((h, c), leaves, (dh, dc))
                results.append((h, c, *grads))
            for got, want in zip(*results):
                torch.testing.assert_close(got, want, **tol)
print("ok")
"""


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
