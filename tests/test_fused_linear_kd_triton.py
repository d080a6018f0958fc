"""What only the Triton row kernel of the fused linear + KD loss has (the rest of its checks are
the backend-parametrised tests/test_fused_linear_kd_rows.py and tests/test_fused_linear_kd.py): rows
walked in several column chunks and several chunks of top-k ids, the teacher's argmax tied across
chunks, its value checks, opcheck of the Triton row op and of the driver over it, and the driver
under torch.compile(fullgraph=True) with backend="triton". Grids stay tiny: the interpreter runs
about 2 ms per program."""

import itertools

import pytest
import torch

from tests.conftest import device_of
from tests.test_fused_linear_kd import Problem, driver_args
from tests.test_fused_linear_kd_rows import BACKENDS, make_rows, reference_rows
from tests.triton_aot import compile_for_sm90_without_spills
from tskd_fast import functional as F
from tskd_fast.ops import fused_linear_kd as ops_flkd
from tskd_fast.ops.kd_loss import KA_MODES
from tskd_fast.reference.fused_linear_kd import DIVERGENCES

pytestmark = pytest.mark.skipif("triton" not in BACKENDS, reason="the Triton row kernel does not run here")


def _module():
    from tskd_fast.ops.triton import fused_linear_kd as module

    return module


def launch(s, t, topk, target, tau, divergence, beta, ka, ce_weight, block_v, block_k=None):
    """The kernel on a copy of s in chunks of block_v columns (and block_k top-k ids)."""
    buf = s.clone()
    ids, logprobs = topk if topk is not None else (None, None)
    flag = torch.ones((1,), dtype=torch.int32, device=s.device)
    loss = _module().launch_fused_linear_kd_rows(
        buf,
        t,
        ids,
        logprobs,
        target,
        tau,
        ops_flkd.DIVERGENCES[divergence],
        beta,
        KA_MODES[ka],
        0.9,
        True,
        ce_weight,
        -100,
        True,
        1.0,
        flag,
        block_v=block_v,
        block_k=block_k,
    )
    assert int(flag[0]) == 1, "the kernel flagged valid inputs"
    return loss, buf


def device():
    return device_of("triton")


@pytest.mark.parametrize("divergence,ka", list(itertools.product(DIVERGENCES, ["none", "ps", "lsr"])))
def test_rows_in_several_chunks(divergence, ka):
    """37 columns in chunks of 16: the online rescaling across chunks, the argmax found in a later
    chunk, the last chunk's masked columns."""
    dtype = torch.float64 if device() == "cpu" else torch.float32
    s, t, target, tau = make_rows(3, 37, dtype, device())
    target[2] = 30  # a label in the last chunk
    loss, grad = launch(s, t, None, target, tau, divergence, 0.3, ka, 0.4, block_v=16)
    loss_ref, grad_ref = reference_rows(
        s.double(), t.double(), None, target, tau.double(), divergence, 0.3, ka, 0.4
    )
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), loss_ref, **tol)
    torch.testing.assert_close(grad.double(), grad_ref, **tol)


def test_teacher_maximum_tied_across_chunks_takes_the_first():
    dtype = torch.float64 if device() == "cpu" else torch.float32
    s, t, target, tau = make_rows(3, 40, dtype, device())
    for row in range(3):
        t[row, [5, 21, 38]] = 30.0  # the maximum in three chunks of 16
    target[:] = torch.tensor([7, 21, 38])
    for ka in ("ps", "lsr"):
        loss, grad = launch(s, t, None, target, tau, "forward_kl", 0.5, ka, 0.0, block_v=16)
        loss_ref, grad_ref = reference_rows(
            s.double(), t.double(), None, target, tau.double(), "forward_kl", 0.5, ka, 0.0
        )
        torch.testing.assert_close(loss.double(), loss_ref)
        torch.testing.assert_close(grad.double(), grad_ref)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_topk_rows_in_several_chunks(divergence):
    """11 listed ids in chunks of 4, 50 columns in chunks of 16, a label listed on one row."""
    dtype = torch.float64 if device() == "cpu" else torch.float32
    s, t, target, tau = make_rows(3, 50, dtype, device())
    top = torch.log_softmax(t, dim=1).topk(11, dim=1)
    target[1] = top.indices[1, 9]
    topk = (top.indices, top.values)
    loss, grad = launch(s, None, topk, target, tau, divergence, 0.3, "none", 0.5, block_v=16, block_k=4)
    loss_ref, grad_ref = reference_rows(
        s.double(), None, (topk[0], topk[1].double()), target, tau.double(), divergence, 0.3, "none", 0.5
    )
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), loss_ref, **tol)
    torch.testing.assert_close(grad.double(), grad_ref, **tol)


def test_without_target_and_without_gradient():
    s, t, _, tau = make_rows(3, 21, torch.float32, device())
    op = _module().fused_linear_kd_rows_triton
    buf = s.clone()
    loss = op(buf, t, None, None, None, tau, 2, 0.5, 0, 0.9, False, 0.0, -100, False, 1.0)
    loss_ref, _ = reference_rows(
        s.double(), t.double(), None, None, tau.double(), "jsd", 0.5, "none", 0.0, False
    )
    torch.testing.assert_close(loss.double(), loss_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(buf, s), "the logits changed without compute_grad"


@pytest.mark.skipif(device() != "cpu", reason="the values are read on the host on the CPU only")
def test_bad_values_found_by_the_kernel_name_the_value():
    """Labels and temperatures the kernel flags, named by the spec's value check."""
    s, t, target, tau = make_rows(4, 12, torch.float32, "cpu")
    op = _module().fused_linear_kd_rows_triton

    def call(target=target, tau=tau):
        return op(s.clone(), t, None, None, target, tau, 0, 0.5, 0, 0.9, True, 0.0, -100, True, 1.0)

    bad_tau = tau.clone()
    bad_tau[2] = float("nan")
    with pytest.raises(ValueError, match=r"temperature\[2\] = nan"):
        call(tau=bad_tau)
    bad_target = target.clone()
    bad_target[3] = 12
    with pytest.raises(ValueError, match=r"target\[3\] = 12"):
        call(target=bad_target)


def test_opcheck_triton_row_op():
    s, t, target, tau = make_rows(3, 19, torch.float32, device())
    op = _module().fused_linear_kd_rows_triton
    torch.library.opcheck(
        op, (s.clone(), t, None, None, target, tau, 4, 0.25, 1, 0.9, True, 0.5, -100, True, 0.5)
    )
    top = torch.log_softmax(t, dim=1).topk(4, dim=1)
    torch.library.opcheck(
        op,
        (s.clone(), None, top.indices, top.values, target, tau, 5, 0.5, 0, 0.9, False, 0.0, -100, True, 1.0),
    )


def test_opcheck_driver_over_triton_rows():
    p = Problem(n=6, dtype=torch.float32, device=device())
    args = list(driver_args(p, 0))
    args[9] = args[9].to(p.xs.device)  # the temperatures
    args[-1] = "triton"
    torch.library.opcheck(torch.ops.tskd_fast.fused_linear_kd.default, tuple(args))


def test_torch_compile_fullgraph_with_triton_backend():
    p = Problem(n=6, dtype=torch.float32, pad_s=0, pad_t=0, device=device())

    def step(x, w, b):
        loss = F.fused_linear_kd(
            x,
            w,
            p.xt,
            p.wt,
            p.target,
            divergence="skew_reverse_kl",
            beta=0.2,
            temperature=1.5,
            ka="lsr",
            ce_weight=0.3,
            chunk_size=4,
            backend="triton",
            student_bias=b,
            teacher_bias=p.bt,
        )
        return loss.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves = [t.clone().requires_grad_(True) for t in (p.xs, p.ws, p.bs)]
    leaves_c = [t.clone().requires_grad_(True) for t in (p.xs, p.ws, p.bs)]
    eager = step(*leaves)
    eager.backward()
    traced = compiled(*leaves_c)
    traced.backward()
    torch.testing.assert_close(traced, eager)
    for a, b in zip(leaves_c, leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


# ---------------------------------------------------------------------------------------------
# Compilation for a real GPU, without one

_AOT_BODY = """
from tskd_fast.ops.triton import fused_linear_kd as K

def signature(dtype):
    s = {"s_ptr": "*" + dtype, "t_ptr": "*" + dtype, "ids_ptr": "*i64", "lp_ptr": "*fp32",
         "scratch_ptr": "*fp32", "y_ptr": "*i64", "tau_ptr": "*fp32", "params_ptr": "*fp32",
         "loss_ptr": "*fp32", "flag_ptr": "*i32"}
    s.update({k: "i32" for k in ("n_cols", "n_k", "s_row_stride", "t_row_stride", "ignore_index")})
    s.update({k: "fp32" for k in ("mp_arg", "mq_arg", "log_on_arg", "log_off_arg", "ce_weight_arg",
                                  "grad_scale_arg")})
    return s

variants = [("bf16", div, ka, False) for div in range(6) for ka in (1, 2)]
variants += [("bf16", div, 0, True) for div in (0, 2, 4)]
variants += [("fp32", 0, 0, False), ("fp16", 5, 0, False)]
for dtype, div, ka, topk in variants:
    c = dict(DIV=div, KA=ka, SCALE_TAU2=True, HAS_TARGET=True, HAS_CE=True, WRITE_GRAD=True,
             TOPK=topk, PARAMS_IN_MEMORY=False, ACC=tl.float32, BLOCK_V=K.MAX_BLOCK_V,
             BLOCK_K=K.MAX_BLOCK_K if topk else 16)
    build(K._flkd_rows_kernel, signature(dtype), c, K.NUM_WARPS,
          f"fused_linear_kd_rows {dtype} div={div} ka={ka} topk={topk}")
"""


@pytest.mark.slow
def test_kernel_compiles_for_sm90_without_spills():
    """Every divergence with each knowledge adjustment and the top-k path, at the widest chunks."""
    compile_for_sm90_without_spills(_AOT_BODY, variants=17)
