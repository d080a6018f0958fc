"""The fused linear + KD row kernel is compiled once per vector ISA (csrc/cpu/isa/); each variant
must agree with the reference: every divergence, the top-k teacher, float32 and bfloat16, rows
shorter than a vector and across the 2048-column blocks."""

import os
import subprocess
import sys

import pytest

from tests.test_cpu_isa_variants import supported_capabilities
from tests.test_fused_linear_kd_rows import BACKENDS

SCRIPT = """
import torch
from tskd_fast import functional as F
assert torch.backends.cpu.get_cpu_capability() == {cap!r}, torch.backends.cpu.get_cpu_capability()
torch.manual_seed(0)
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")
for dtype, vocab in ((torch.float32, 5), (torch.float32, 2100), (torch.bfloat16, 37)):
    tol = dict(rtol=3e-2, atol=3e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-5)
    xs = torch.randn(9, 8).to(dtype).requires_grad_(True)
    ws = (torch.randn(vocab, 8) * 0.7).to(dtype).requires_grad_(True)
    xt, wt = torch.randn(9, 12).to(dtype), (torch.randn(vocab, 12) * 0.7).to(dtype)
    y = torch.randint(0, vocab, (9,))
    y[0] = -100
    top = (xt.float() @ wt.float().T).log_softmax(dim=1).topk(min(4, vocab), dim=1)
    cases = [(d, "full") for d in DIVERGENCES] + [("forward_kl", "topk"), ("jsd", "topk")]
    for divergence, teacher in cases:
        kw = dict(divergence=divergence, beta=0.4, temperature=1.7, ce_weight=0.3, reduction="none")
        if teacher == "full":
            args, kw["ka"] = (xs, ws, xt, wt, y), "ps"
        else:
            args, kw["teacher_topk"] = (xs, ws, None, None, y), (top.indices, top.values)
        out = F.fused_linear_kd(*args, chunk_size=4, backend="cpu", **kw)
        got = torch.autograd.grad(out.sum(), (xs, ws))
        ref = F.fused_linear_kd(*args, backend="reference", **kw)
        want = torch.autograd.grad(ref.sum(), (xs, ws))
        torch.testing.assert_close(out, ref, **tol)
        torch.testing.assert_close(got, want, **tol)
print("ok")
"""


@pytest.mark.skipif("cpu" not in BACKENDS, reason="the C++ row op is not built")
@pytest.mark.parametrize("cap", supported_capabilities())
def test_isa_variant_matches_reference(cap):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap.lower())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(cap=cap)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
