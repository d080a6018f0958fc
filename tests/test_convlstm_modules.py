"""ConvLSTMCell / ConvLSTM against a plain-PyTorch ConvLSTM with the same weights (outputs and
gradients, with and without peepholes, NCHW and channels_last), float64 gradcheck through time,
torch.compile, state dicts of other implementations, and bad input."""

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast.nn import ConvLSTM, ConvLSTMCell, permute_gate_blocks

BACKENDS = ["reference", *kernel_backends()]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plain_step(x, h, c, weight, bias, peep=(None, None, None), order="ifgo"):
    """A textbook ConvLSTM step (conv over concat[x, h], gates in ``order``), independent of tskd_fast."""
    pad = weight.shape[-1] // 2
    blocks = dict(
        zip(order, F.conv2d(torch.cat([x, h], 1), weight, bias, padding=pad).chunk(4, 1), strict=True)
    )
    w_ci, w_cf, w_co = peep
    a_i = blocks["i"] + (0 if w_ci is None else w_ci * c)
    a_f = blocks["f"] + (0 if w_cf is None else w_cf * c)
    c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(blocks["g"])
    a_o = blocks["o"] + (0 if w_co is None else w_co * c)
    return torch.sigmoid(a_o) * torch.tanh(c), c


def plain_sequence(xs, state, layers):
    """xs: list of (B, C, H, W); layers: list of (weight, bias, peep); state: list of (h, c) or None."""
    finals = []
    for layer, (weight, bias, peep) in enumerate(layers):
        h, c = state[layer]
        outs = []
        for x in xs:
            h, c = plain_step(x, h, c, weight, bias, peep)
            outs.append(h)
        finals.append((h, c))
        xs = outs
    return torch.stack(xs), finals


def _layout(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _randomise_peepholes(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.split(".")[-1] in ("w_ci", "w_cf", "w_co"):
                p.normal_(0, 0.5)  # zero-initialised: make them matter


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cell_matches_plain_convlstm(backend, peephole, channels_last):
    device = device_of(backend)
    B, C_in, C_h, H, W = 3, 5, 6, 7, 9
    cell = ConvLSTMCell(C_in, C_h, 3, peephole=peephole, spatial_size=(H, W), backend=backend).to(device)
    _randomise_peepholes(cell)
    if channels_last:
        cell = cell.to(memory_format=torch.channels_last)
    x = _layout(torch.randn(B, C_in, H, W, device=device), channels_last).requires_grad_()
    h0 = _layout(torch.randn(B, C_h, H, W, device=device), channels_last).requires_grad_()
    c0 = _layout(torch.randn(B, C_h, H, W, device=device), channels_last).requires_grad_()
    h, c = cell(x, (h0, c0))
    go_h, go_c = torch.randn_like(h), torch.randn_like(c)
    grads = torch.autograd.grad((h * go_h).sum() + (c * go_c).sum(), [x, h0, c0, *cell.parameters()])

    names = ["x", "h0", "c0", *(n for n, _ in cell.named_parameters())]

    def plain(dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (x, h0, c0, *cell.parameters())]
        p = dict(zip(names, leaves, strict=True))
        peep = (p["w_ci"], p["w_cf"], p["w_co"]) if peephole else (None,) * 3
        out_h, out_c = plain_step(p["x"], p["h0"], p["c0"], p["conv.weight"], p["conv.bias"], peep)
        loss = (out_h * go_h.to(dtype)).sum() + (out_c * go_c.to(dtype)).sum()
        return (out_h, out_c), torch.autograd.grad(loss, leaves)

    (t_h, t_c), t_grads = plain(torch.float64)
    (p_h, p_c), p_grads = plain(torch.float32)
    assert_close_to_truth(h, p_h, t_h, torch.float32, "h")
    assert_close_to_truth(c, p_c, t_c, torch.float32, "c")
    for name, g, pg, tg in zip(names, grads, p_grads, t_grads, strict=True):
        assert_close_to_truth(g, pg, tg, torch.float32, f"grad {name}")


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_convlstm_sequence_matches_plain(peephole, batch_first, channels_last):
    T, B, C_in, C_h, H, W, L = 4, 2, 3, 5, 6, 5, 2
    model = ConvLSTM(
        C_in, C_h, 3, num_layers=L, batch_first=batch_first, peephole=peephole, spatial_size=(H, W)
    )
    _randomise_peepholes(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Every step channels_last: a (T, B, H, W, C) buffer seen as (T, B, C, H, W).
    seq = (
        torch.randn(T, B, H, W, C_in).permute(0, 1, 4, 2, 3)
        if channels_last
        else torch.randn(T, B, C_in, H, W)
    )
    seq.requires_grad_()
    h0 = torch.randn(L, B, C_h, H, W, requires_grad=True)
    c0 = torch.randn(L, B, C_h, H, W, requires_grad=True)
    inp = seq.transpose(0, 1) if batch_first else seq
    out, (h_n, c_n) = model(inp, (h0, c0))
    out_tm = out.transpose(0, 1) if batch_first else out
    assert out_tm.shape == (T, B, C_h, H, W) and h_n.shape == c_n.shape == (L, B, C_h, H, W)
    go = torch.randn_like(out_tm)
    params = list(model.parameters())
    grads = torch.autograd.grad((out_tm * go).sum() + h_n.sum() + 2 * c_n.sum(), [seq, h0, c0, *params])

    def plain(dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (seq, h0, c0, *params)]
        s, hh, cc, *ps = leaves
        p = dict(zip((n for n, _ in model.named_parameters()), ps, strict=True))
        layers = [
            (
                p[f"cell_list.{i}.conv.weight"],
                p[f"cell_list.{i}.conv.bias"],
                tuple(p[f"cell_list.{i}.{k}"] for k in ("w_ci", "w_cf", "w_co")) if peephole else (None,) * 3,
            )
            for i in range(L)
        ]
        o, finals = plain_sequence(list(s.unbind(0)), [(hh[i], cc[i]) for i in range(L)], layers)
        hn, cn = torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals])
        loss = (o * go.to(dtype)).sum() + hn.sum() + 2 * cn.sum()
        return (o, hn, cn), torch.autograd.grad(loss, leaves)

    truth, t_grads = plain(torch.float64)
    same, p_grads = plain(torch.float32)
    for what, a, p, t in zip(("outputs", "h_n", "c_n"), (out_tm, h_n, c_n), same, truth, strict=True):
        assert_close_to_truth(a, p, t, torch.float32, what)
    for i, (g, pg, tg) in enumerate(zip(grads, p_grads, t_grads, strict=True)):
        assert_close_to_truth(g, pg, tg, torch.float32, f"grad {i}")


def test_zero_state_and_zero_input_match_explicit_zeros():
    model = ConvLSTM(3, 4, 3, peephole=True, spatial_size=(5, 6))
    _randomise_peepholes(model)
    seq = torch.randn(3, 2, 3, 5, 6)
    zeros = torch.zeros(1, 2, 4, 5, 6)
    out_a, (h_a, c_a) = model(seq)
    out_b, (h_b, c_b) = model(seq, (zeros, zeros))
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(c_a, c_b)
    # input=None: `steps` all-zero input steps from a given state (the TSKD forecaster).
    out_c, (h_c, c_c) = model(None, (h_a, c_a), steps=2)
    out_d, (h_d, c_d) = model(torch.zeros(2, 2, 3, 5, 6), (h_a, c_a))
    torch.testing.assert_close(out_c, out_d)
    torch.testing.assert_close(c_c, c_d)


def test_convlstm_float64_gradcheck_through_time():
    """Two layers, three steps, peepholes: every input, state and parameter (~800 numbers)."""
    model = ConvLSTM(2, 2, 3, num_layers=2, peephole=True, spatial_size=(3, 3)).double()
    _randomise_peepholes(model)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    seq = torch.randn(3, 1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 1, 2, 3, 3, dtype=torch.float64, requires_grad=True)

    def run(s, h, c, *ps):
        out, (h_n, c_n) = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (s, (h, c)))
        return out, c_n

    assert torch.autograd.gradcheck(run, (seq, h0, c0, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_cell_compiles_fullgraph():
    torch._dynamo.reset()
    cell = ConvLSTMCell(3, 4, 3, peephole=True, spatial_size=(5, 7))
    _randomise_peepholes(cell)
    x, h0, c0 = torch.randn(2, 3, 5, 7), torch.randn(2, 4, 5, 7), torch.randn(2, 4, 5, 7)
    compiled = torch.compile(cell, fullgraph=True)
    h, c = compiled(x, (h0, c0))
    h_ref, c_ref = cell(x, (h0, c0))
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    (compiled(x, (h0, c0))[0].sum()).backward()
    assert cell.conv.weight.grad is not None and cell.w_co.grad is not None
    assert torch.isfinite(cell.conv.weight.grad).all() and cell.w_co.grad.abs().sum() > 0


def test_peepholes_are_trainable_parameters():
    cell = ConvLSTMCell(2, 3, 3, peephole=True, spatial_size=4)
    names = dict(cell.named_parameters())
    assert {"w_ci", "w_cf", "w_co"} <= set(names)
    assert names["w_ci"].shape == (1, 3, 4, 4) and names["w_ci"].requires_grad
    h, c = cell(torch.randn(2, 2, 4, 4), (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)))
    (h.sum() + c.sum()).backward()
    assert all(names[k].grad.abs().sum() > 0 for k in ("w_ci", "w_cf", "w_co"))


def test_loads_tskd_reference_layout():
    """TSKD_v1 conv_lstm_model/convLSTM.py: ``_conv`` over concat[x, h], chunk order i, f, tmp_c, o;
    its peepholes Wci/Wcf/Wco (1, C_h, H, W) (in state dicts of code that registers them)."""
    C_in, C_h, H, W = 3, 4, 5, 5
    weight, bias = torch.randn(4 * C_h, C_in + C_h, 3, 3) * 0.3, torch.randn(4 * C_h) * 0.3
    peep = [torch.randn(1, C_h, H, W) * 0.3 for _ in range(3)]
    ref_state = {"_conv.weight": weight, "_conv.bias": bias, "Wci": peep[0], "Wcf": peep[1], "Wco": peep[2]}
    cell = ConvLSTMCell(C_in, C_h, 3, peephole=True, spatial_size=(H, W))
    cell.load_state_dict(ref_state)
    x, h0, c0 = torch.randn(2, C_in, H, W), torch.randn(2, C_h, H, W), torch.randn(2, C_h, H, W)
    got = cell(x, (h0, c0))
    want = plain_step(x, h0, c0, weight, bias, peep, order="ifgo")
    torch.testing.assert_close(got, want)
    # The reference registers no peepholes (they are plain attributes): its state dict has only _conv.
    plain = ConvLSTMCell(C_in, C_h, 3)
    plain.load_state_dict({"_conv.weight": weight, "_conv.bias": bias})
    torch.testing.assert_close(plain(x, (h0, c0)), plain_step(x, h0, c0, weight, bias))


def test_loads_ndrplz_layout_with_gate_permutation():
    """ndrplz/ConvLSTM_pytorch: ``cell_list.{l}.conv`` with gate order i, f, o, g."""
    C_in, C_h, H, W = 3, 4, 6, 5
    state = {}
    for layer in range(2):
        cin = C_in if layer == 0 else C_h
        state[f"cell_list.{layer}.conv.weight"] = torch.randn(4 * C_h, cin + C_h, 3, 3) * 0.3
        state[f"cell_list.{layer}.conv.bias"] = torch.randn(4 * C_h) * 0.3
    model = ConvLSTM(C_in, C_h, 3, num_layers=2, batch_first=True)
    model.load_state_dict(permute_gate_blocks(state, "ifog"))
    seq = torch.randn(2, 3, C_in, H, W)  # batch first
    out, (h_n, _) = model(seq)
    xs = list(seq.unbind(1))
    for layer in range(2):
        h = c = torch.zeros(2, C_h, H, W)
        outs = []
        for x in xs:
            w, b = state[f"cell_list.{layer}.conv.weight"], state[f"cell_list.{layer}.conv.bias"]
            h, c = plain_step(x, h, c, w, b, order="ifog")
            outs.append(h)
        xs = outs
    torch.testing.assert_close(out, torch.stack(xs, 1))
    torch.testing.assert_close(h_n[1], xs[-1])


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="spatial_size"):
        ConvLSTMCell(2, 3, 3, peephole=True)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvLSTMCell(2, 3, 4)
    with pytest.raises(ValueError, match="hidden_channels"):
        ConvLSTMCell(2, 0, 3)
    cell = ConvLSTMCell(2, 3, 3)
    with pytest.raises(ValueError, match="in_channels=2"):
        cell(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match=r"x must be a 4-D"):
        cell(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\)"):
        cell(torch.randn(1, 2, 4, 4), (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"state\[0\] \(h\)"):
        cell(torch.randn(1, 2, 4, 4), (torch.randn(2, 3, 4, 4), torch.randn(1, 3, 4, 4)))
    with pytest.raises(ValueError, match="needs the state"):
        cell(None)
    with pytest.raises(ValueError, match="peepholes are for states of size"):
        ConvLSTMCell(2, 3, 3, peephole=True, spatial_size=5)(torch.randn(1, 2, 4, 4))
    seq_model = ConvLSTM(2, 3, 3)
    with pytest.raises(ValueError, match="length 0"):
        seq_model(torch.randn(0, 1, 2, 4, 4))
    with pytest.raises(ValueError, match="5-D"):
        seq_model(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="num_layers=1"):
        seq_model(torch.randn(2, 1, 2, 4, 4), (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)))
    with pytest.raises(ValueError, match="steps"):
        seq_model(None, (torch.zeros(1, 1, 3, 4, 4), torch.zeros(1, 1, 3, 4, 4)))
    with pytest.raises(ValueError, match="source_order"):
        permute_gate_blocks({}, "ifgx")
    with pytest.raises(ValueError, match="backend"):
        ConvLSTMCell(2, 3, 3, backend="fastest")
