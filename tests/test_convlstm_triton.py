"""Triton-specific tests of tskd_fast::convlstm_gates_triton and its backward.

The backend-generic checks (values, gradients, opcheck, torch.compile, the input checks) live in
test_convlstm_kernels.py and test_convlstm_ops.py; these cover what only the Triton ops have: the
launch over several programs per sample, CPU tensors refused outside the interpreter, and that
every kernel variant compiles for a real GPU (sm_90) without register spills. Without a GPU the kernels
run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET).
"""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.triton_aot import compile_for_sm90_without_spills
from tskd_fast import reference

pytestmark = pytest.mark.skipif("triton" not in kernel_backends(), reason="triton cannot run here")

if "triton" in kernel_backends():
    from tskd_fast.ops.triton import convlstm as triton_convlstm

DEVICE = device_of("triton")


def sample(batch=2, hidden=3, height=4, width=5, dtype=torch.float32):
    gates = torch.randn(batch, 4 * hidden, height, width, dtype=dtype, device=DEVICE) * 2
    c_prev = torch.randn(batch, hidden, height, width, dtype=dtype, device=DEVICE)
    ws = [torch.randn(hidden, height, width, dtype=dtype, device=DEVICE) * 0.5 for _ in range(3)]
    return gates, c_prev, ws


def test_several_programs_per_sample(monkeypatch):
    """A block smaller than a sample: programs split positions, the sums loop over the batch."""
    monkeypatch.setattr(triton_convlstm, "BLOCK", 16)
    monkeypatch.setattr(triton_convlstm, "BACKWARD_BLOCK", 16)
    gates, c_prev, ws = sample(3, 3, 3, 5)  # 45 positions: three programs per sample
    for fmt in (torch.contiguous_format, torch.channels_last):
        g, c = gates.contiguous(memory_format=fmt), c_prev.contiguous(memory_format=fmt)
        h, c_new = triton_convlstm.convlstm_gates_triton(g, c, *ws)
        h_ref, c_ref = reference.convlstm_gates(g, c, *ws)
        torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c_new, c_ref, rtol=1e-5, atol=1e-6)
        dh = torch.randn_like(c_prev)
        grads = triton_convlstm.convlstm_gates_backward_triton(dh, None, g, c, *ws, True)
        leaves = [t.clone().requires_grad_(True) for t in (g, c, *ws)]
        want = torch.autograd.grad(reference.convlstm_gates(*leaves)[0], leaves, dh)
        for got, expected in zip(grads, want, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_cpu_tensors_outside_the_interpreter_are_refused(monkeypatch):
    if DEVICE != "cpu":
        pytest.skip("the interpreter runs here only without a GPU")
    monkeypatch.setattr(triton_convlstm, "INTERPRETED", False)
    gates, c_prev, _ = sample()
    with pytest.raises(ValueError, match="CPU tensors run only in the Triton interpreter"):
        triton_convlstm.convlstm_gates_triton(gates, c_prev)


# ---------------------------------------------------------------------------------------------
# Compilation for a real GPU, without one: the interpreter does not catch everything the
# compiler rejects, nor register spills.

_AOT_BODY = """
from tskd_fast.ops.triton import convlstm as G

ints = ("n_pos", "n_cols", "n_blocks", "gate_batch_stride", "gate_row_stride", "gate_block")

def forward(dtype, peep):
    sig = {k: "*" + dtype for k in ("g_ptr", "cp_ptr", "wci_ptr", "wcf_ptr", "wco_ptr", "h_ptr", "c_ptr")}
    sig.update({k: "i32" for k in ints})
    c = dict(HAS_CI=peep, HAS_CF=peep, HAS_CO=peep, ACC=tl.float32, BLOCK=G.BLOCK)
    build(G._convlstm_forward_kernel, sig, c, G.NUM_WARPS, f"forward {dtype} peepholes={peep}")

def backward(dtype, peep, sums, dh, dc):
    sig = {k: "*" + dtype for k in ("dh_ptr", "dc_ptr", "g_ptr", "cp_ptr", "wci_ptr", "wcf_ptr",
                                     "wco_ptr", "dg_ptr", "dcp_ptr")}
    sig.update({k: "*fp32" for k in ("sci_ptr", "scf_ptr", "sco_ptr")})
    sig["n_batch"] = "i32"
    sig.update({k: "i32" for k in ints})
    c = dict(HAS_DH=dh, HAS_DC=dc, HAS_CI=peep, HAS_CF=peep, HAS_CO=peep, SUMS=sums,
             ACC=tl.float32, BLOCK=G.BACKWARD_BLOCK)
    build(G._convlstm_backward_kernel, sig, c, G.NUM_WARPS, f"backward {dtype} peep={peep} sums={sums} dh={dh} dc={dc}")

forward("fp32", False)
forward("fp32", True)
forward("bf16", True)
backward("fp32", True, True, True, True)
backward("fp32", True, True, False, True)
backward("fp32", True, False, True, True)
backward("fp32", False, False, True, True)
backward("bf16", True, True, True, True)
backward("fp16", False, False, True, False)
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_spills():
    compile_for_sm90_without_spills(_AOT_BODY, variants=9)
