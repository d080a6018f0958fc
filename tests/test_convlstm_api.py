"""tskd_fast.functional.convlstm_gates: argument checks, and the reference against docs/methods.md §3.4."""

import pytest
import torch

from tskd_fast import functional as F
from tskd_fast import reference


def inputs(batch=3, hidden=5, height=7, width=9, dtype=torch.float64, peepholes=True):
    gates = torch.randn(batch, 4 * hidden, height, width, dtype=dtype) * 2
    c_prev = torch.randn(batch, hidden, height, width, dtype=dtype)
    ws = [torch.randn(hidden, height, width, dtype=dtype) * 0.5 if peepholes else None for _ in range(3)]
    return gates, c_prev, ws


def closed_form(gates, c_prev, w_ci, w_cf, w_co, dh, dc_next):
    """Forward and backward of docs/methods.md §3.4, written out in float64."""
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=1)
    i = torch.sigmoid(a_i + w_ci * c_prev)
    f = torch.sigmoid(a_f + w_cf * c_prev)
    g = torch.tanh(a_g)
    c = f * c_prev + i * g
    o = torch.sigmoid(a_o + w_co * c)
    k = torch.tanh(c)
    h = o * k
    da_o = dh * k * o * (1 - o)
    dc = dc_next + dh * o * (1 - k * k) + da_o * w_co
    da_i = dc * g * i * (1 - i)
    da_f = dc * c_prev * f * (1 - f)
    da_g = dc * i * (1 - g * g)
    dc_prev = dc * f + da_i * w_ci + da_f * w_cf
    grads = (
        torch.cat([da_i, da_f, da_g, da_o], dim=1),
        dc_prev,
        (da_i * c_prev).sum(0),
        (da_f * c_prev).sum(0),
        (da_o * c).sum(0),
    )
    return h, c, grads


def test_reference_matches_closed_form_forward_and_backward():
    gates, c_prev, ws = inputs()
    leaves = [t.clone().requires_grad_(True) for t in (gates, c_prev, *ws)]
    h, c = reference.convlstm_gates(*leaves)
    dh, dc = torch.randn_like(h), torch.randn_like(c)
    got = torch.autograd.grad((h * dh).sum() + (c * dc).sum(), leaves)
    h_cf, c_cf, want = closed_form(gates, c_prev, *ws, dh, dc)
    torch.testing.assert_close(h, h_cf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_cf, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(["gates", "c_prev", "w_ci", "w_cf", "w_co"], got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"d{name}")


def test_reference_keeps_half_inputs_in_their_dtype_with_float32_math():
    gates, c_prev, ws = inputs(dtype=torch.float32)
    h32, c32 = reference.convlstm_gates(gates, c_prev, *ws)
    h16, c16 = reference.convlstm_gates(gates.bfloat16(), c_prev.bfloat16(), *(w.bfloat16() for w in ws))
    assert h16.dtype == torch.bfloat16 and c16.dtype == torch.bfloat16
    # Only the rounding of inputs and outputs to bfloat16 separates the two.
    torch.testing.assert_close(h16.float(), h32, rtol=0.05, atol=0.05)
    torch.testing.assert_close(c16.float(), c32, rtol=0.05, atol=0.05)


def test_peephole_of_shape_1_c_h_w_equals_c_h_w():
    gates, c_prev, ws = inputs()
    h3, c3 = F.convlstm_gates(gates, c_prev, *ws)
    h4, c4 = F.convlstm_gates(gates, c_prev, *(w.unsqueeze(0) for w in ws))
    assert torch.equal(h3, h4) and torch.equal(c3, c4)


def _bad(**change):
    gates, c_prev, ws = inputs(dtype=torch.float32)
    args = dict(gates=gates, c_prev=c_prev, w_ci=ws[0], w_cf=ws[1], w_co=ws[2])
    args.update(change)
    return args


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize(
    "change,message",
    [
        (
            dict(gates=torch.randn(3, 19, 7, 9)),
            r"gates must have shape \(B, 4\*C_h, H, W\) = \(3, 20, 7, 9\)",
        ),
        (dict(gates=torch.randn(3, 20, 7, 8)), r"gates must have shape .* got \(3, 20, 7, 8\)"),
        (dict(gates=torch.randn(2, 20, 7, 9)), r"gates must have shape .* got \(2, 20, 7, 9\)"),
        (dict(gates=torch.randn(3, 20, 63)), r"gates must have shape"),
        (dict(c_prev=torch.randn(3, 5, 63)), "c_prev must be 4-D"),
        (dict(c_prev=torch.randn(3, 5, 7, 9, dtype=torch.float64)), "c_prev must have the dtype of gates"),
        (dict(c_prev=torch.randint(0, 3, (3, 5, 7, 9))), "c_prev must be float32, float16, bfloat16"),
        (dict(gates=[[1.0]]), "gates must be a torch.Tensor"),
        (dict(w_ci=torch.randn(5, 7, 8)), r"w_ci must have shape \(C_h, H, W\) = \(5, 7, 9\)"),
        (dict(w_cf=torch.randn(3, 5, 7, 9)), r"w_cf must have shape .* got \(3, 5, 7, 9\)"),
        (dict(w_co=torch.randn(5, 63)), "w_co must have shape"),
        (dict(w_co=torch.randn(5, 7, 9, dtype=torch.float16)), "w_co must have the dtype of gates"),
        (dict(w_ci=1.0), "w_ci must be a torch.Tensor or None"),
        (dict(backend="gpu"), "backend must be one of"),
    ],
)
def test_convlstm_gates_rejects(backend, change, message):
    args = _bad(**change)
    args.setdefault("backend", backend)
    with pytest.raises(ValueError, match=message):
        F.convlstm_gates(**args)


def test_convlstm_gates_rejects_mixed_devices():
    # The meta device stands in for a second device on machines without a GPU.
    args = _bad()
    with pytest.raises(ValueError, match="c_prev is on cpu but gates is on meta"):
        F.convlstm_gates(args["gates"].to("meta"), args["c_prev"])
    with pytest.raises(ValueError, match="w_cf is on meta but gates is on cpu"):
        F.convlstm_gates(args["gates"], args["c_prev"], w_cf=args["w_cf"].to("meta"))
