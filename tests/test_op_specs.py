"""The op specs (tskd_fast/ops/<family>.py) against the ops made from them: every op has a spec, the
Triton op's schema is its C++ twin's, and the C++ checks (csrc/checks/) and the spec's Python
check reject the same inputs with the same ValueError."""

import pytest
import torch

from tests.conftest import kernel_backends
from tskd_fast.ops import SPECS, op_for

BACKENDS = kernel_backends()
HAS_CPP = "cpu" in BACKENDS
# The C++ library's ops that are not kernels of a family.
UTILITY_OPS = {"output_pool_cached_bytes", "release_output_pool"}


def _registered_ops() -> set[str]:
    return {
        name.split("::", 1)[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("tskd_fast::")
    }


def _signature(schema: torch._C.FunctionSchema) -> str:
    """The schema without the op's name: arguments (names, types, defaults) and returns."""
    return str(schema).split("(", 1)[1]


@pytest.mark.skipif(not HAS_CPP, reason="tskd_fast._C is not built")
def test_every_cpp_op_has_a_spec_and_the_same_schema():
    cpp_ops = {name for name in _registered_ops() if not name.endswith("_triton")} - UTILITY_OPS
    assert cpp_ops == set(SPECS)
    for name, spec in SPECS.items():
        cpp = getattr(torch.ops.tskd_fast, name).default._schema
        declared = torch._C.parse_schema(f"{spec.qualname}{spec.schema}")
        assert _signature(cpp) == _signature(declared), name


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton cannot run here")
def test_every_triton_op_has_its_cpp_twins_schema():
    for name in SPECS:
        op_for("triton", name)  # defines the family's Triton ops
    triton_ops = {name for name in _registered_ops() if name.endswith("_triton")}
    assert triton_ops == {spec.triton_name for spec in SPECS.values()}
    for name, spec in SPECS.items():
        triton = getattr(torch.ops.tskd_fast, spec.triton_name).default._schema
        declared = torch._C.parse_schema(f"{spec.qualname}{spec.schema}")
        assert _signature(triton) == _signature(declared), name
        if HAS_CPP:
            assert _signature(triton) == _signature(getattr(torch.ops.tskd_fast, name).default._schema)


def test_every_spec_is_complete():
    for name, spec in SPECS.items():
        assert spec.name == name and spec.check is not None and spec.fake is not None, name
        if spec.autograd is not None and spec.autograd.backward_op is not None:
            assert spec.autograd.backward_op in SPECS, name
        assert spec.differentiable or spec.autograd is None, name


# ---------------------------------------------------------------------------------------------
# One check, two languages: the same bad inputs, the same ValueError


def _logits(rows=5, classes=11, dtype=torch.float32):
    return torch.randn(rows, classes, dtype=dtype), torch.randn(rows, classes, dtype=dtype)


def _kd_loss_cases():
    s, t = _logits()
    y = torch.randint(0, 11, (5,))
    tau = torch.full((5,), 2.0)
    base = [s, t, y, tau, 1, 0.9, True, 0.5, -100, True, 0.2, 2]

    def case(**change):
        args = list(base)
        names = ["student", "teacher", "target", "temperature", "ka", "lsr_p", "scale_tau2", "ce_weight"]
        names += ["ignore_index", "compute_grad", "grad_scale", "reduction"]
        for key, value in change.items():
            args[names.index(key)] = value
        return tuple(args)

    return [
        case(student=s[0], teacher=t[0]),
        case(teacher=t[:, :3]),
        case(student=s[:0], teacher=t[:0], target=y[:0], temperature=tau[:0]),
        case(student=s[:, :0], teacher=t[:, :0]),
        case(student=s.long(), teacher=t.long()),
        case(teacher=t.double()),
        case(target=y[:2]),
        case(target=y.int()),
        case(ka=4),
        case(target=None, ce_weight=0.0),
        case(target=None, ka=0),
        case(lsr_p=0.0),
        case(ce_weight=float("nan")),
        case(grad_scale=float("inf")),
        case(reduction=-1),
        case(temperature=tau[:3]),
        case(temperature=tau.double()),
        case(temperature=tau.half()),
        case(target=torch.tensor([0, 1, 11, 2, 3])),
        case(temperature=torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0])),
        case(temperature=torch.tensor([1.0, 2.0, 1.0, float("inf"), 1.0])),
    ]


def _dtd_cases():
    s, t = _logits()
    y = torch.randint(0, 11, (5,))
    weight = [
        (s, t[:2], y, 0, 2.0, 0, -100),
        (s, t, y, 2, 2.0, 0, -100),
        (s, t, y, 0, -1.0, 0, -100),
        (s, t, y, 0, float("nan"), 0, -100),
        (s, t, None, 0, 2.0, 2, -100),
        (s, t, torch.tensor([0, -5, 1, 1, 1]), 0, 2.0, 1, -100),
    ]
    temperature = [
        (*weight[0], 4.0, 1.0, 0.1),
        (s, t, y, 0, 2.0, 0, -100, 0.0, 1.0, 0.1),
        (s, t, y, 0, 2.0, 0, -100, 4.0, float("nan"), 0.1),
        (s, t, y, 0, 2.0, 0, -100, 4.0, 1.0, 0.0),
    ]
    return [("dtd_weight", a) for a in weight] + [("dtd_temperature", a) for a in temperature]


def _convlstm_cases():
    g, c = torch.randn(2, 12, 4, 5), torch.randn(2, 3, 4, 5)
    w = torch.randn(3, 4, 5)
    forward = [
        (g.int(), c.int(), None, None, None),
        (g, c.int(), None, None, None),
        (g, c[0], None, None, None),
        (g[:, :11], c, None, None, None),
        (g, c.half(), None, None, None),
        (g, c, w[:2], None, None),
        (g, c, None, w.double(), None),
        (g, c, None, None, w.unsqueeze(1)),
    ]
    backward = [
        (c[:1], None, g, c, None, None, None, False),
        (None, c.double(), g, c, w, None, None, True),
        (c, c, g, c[:, :2], None, None, None, True),
    ]
    return [("convlstm_gates", a) for a in forward] + [("convlstm_gates_backward", a) for a in backward]


def _abf_cases():
    x, y = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 3)
    w, b = torch.randn(2, 8), torch.randn(2)
    gates = torch.randn(2, 36, 2)
    forward = [
        (x[0], y, w, b),
        (x[:, :, :0], y, w, b),
        (x.long(), y.long(), w, b),
        (x, y.double(), w, b),
        (x, y[:1], w, b),
        (x, y[:, :3], w, b),
        (x, torch.randn(2, 4, 7, 3), w, b),
        (x, y, w[:, :6], b),
        (x, y, w.double(), b),
        (x, y, w, b[:1]),
        (x, y, w, b.half()),
    ]
    backward = [
        (x[:1], x, y, w, gates),
        (x.half(), x, y, w, gates),
        (x, x, y, w, gates[:, :5]),
        (x, x, y, w, gates.double()),
    ]
    return [("abf_fuse", a) for a in forward] + [("abf_fuse_backward", a) for a in backward]


def _hcl_cases():
    fs, ft = torch.randn(2, 3, 7, 7), torch.randn(2, 3, 7, 7)
    return [
        ("hcl_loss", a)
        for a in (
            ([fs], [ft, ft], [4, 2, 1], [True], 1.0),
            ([fs], [ft], [4, 2, 1], [True, False], 1.0),
            ([fs[0]], [ft[0]], [4], [True], 1.0),
            ([fs[:0]], [ft[:0]], [4], [True], 1.0),
            ([fs], [ft[:1]], [4], [True], 1.0),
            ([fs], [ft[:, :2]], [4], [True], 1.0),
            ([fs], [ft[..., :5]], [4], [True], 1.0),
            ([fs, fs.double()], [ft, ft.double()], [4], [True, True], 1.0),
            ([fs], [ft.half()], [4], [True], 1.0),
            ([fs], [ft], [1] * 9, [True], 1.0),
            ([fs], [ft], [2, 0], [True], 1.0),
            ([fs], [ft], [2], [True], float("nan")),
        )
    ]


CASES = (
    [("kd_loss", a) for a in _kd_loss_cases()]
    + _dtd_cases()
    + _convlstm_cases()
    + _abf_cases()
    + _hcl_cases()
)


@pytest.mark.skipif(not HAS_CPP, reason="tskd_fast._C is not built")
@pytest.mark.parametrize("name,args", CASES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(CASES)])
def test_cpp_and_python_checks_say_the_same(name, args):
    spec = SPECS[name]
    with pytest.raises(ValueError) as python:
        spec.check(*args)
        if spec.check_values is not None:
            spec.check_values(*args)
    with pytest.raises(ValueError) as cpp:
        op_for("cpu", name)(*args)
    assert str(cpp.value) == str(python.value)


# ---------------------------------------------------------------------------------------------
# One autograd formula, two languages: the C++ node of a C++ op and the spec's formula, given the
# same forward outputs, give the same gradients


class _Ctx:
    """What setup_context and backward use of an autograd context."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _formula_cases():
    z = torch.randn(6, 9)
    kd = (
        z,
        torch.randn(6, 9),
        torch.randint(0, 9, (6,)),
        torch.full((6,), 2.0),
        1,
        0.9,
        True,
        0.5,
        -100,
        True,
    )
    g, c = torch.randn(2, 12, 3, 4), torch.randn(2, 3, 3, 4)
    x, y = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 3)
    fs = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    ft = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    return [
        ("kd_loss", (*kd, 1.0 / 6, 2), [0], [torch.tensor(1.0)]),
        ("kd_loss", (*kd, 1.0, 0), [0], [torch.rand(6) + 0.5]),
        ("convlstm_gates", (g, c, torch.randn(3, 3, 4), None, torch.randn(3, 3, 4)), [0, 1, 2, 4], None),
        ("convlstm_gates", (g, c, None, None, None), [0, 1], None),
        ("abf_fuse", (x, y, torch.randn(2, 8), torch.randn(2)), [0, 1, 2, 3], None),
        ("hcl_loss", (fs, ft, [4, 2, 1], [True, True], 1.0), [0], [torch.tensor(0.5)]),
    ]


@pytest.mark.skipif(not HAS_CPP, reason="tskd_fast._C is not built")
@pytest.mark.parametrize("name,args,differentiated,incoming", _formula_cases())
def test_cpp_autograd_and_the_spec_formula_give_identical_gradients(name, args, differentiated, incoming):
    spec = SPECS[name]
    op = op_for("cpu", name)

    def leaves():
        out = []
        for i, a in enumerate(args):
            if isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
                a = [t.clone().requires_grad_(i in differentiated) for t in a]
            elif isinstance(a, torch.Tensor) and a.is_floating_point():
                a = a.clone().requires_grad_(i in differentiated)
            out.append(a)
        return out

    inputs = leaves()
    output = op(*inputs)
    outs = [output[0]] if name in ("kd_loss", "abf_fuse", "hcl_loss") else list(output)
    grads = incoming if incoming is not None else [torch.randn_like(o) for o in outs]
    flat = [t for i in differentiated for t in (inputs[i] if isinstance(inputs[i], list) else [inputs[i]])]
    cpp = torch.autograd.grad(outs, flat, grads)

    needs = [
        [True] * len(a) if isinstance(a, list) and i in differentiated else i in differentiated
        for i, a in enumerate(args)
    ]
    ctx = _Ctx(tuple(needs))

    def detach(a):
        if isinstance(a, list):
            return [detach(t) for t in a]
        return a.detach() if isinstance(a, torch.Tensor) else a

    detached = [detach(a) for a in inputs]
    backward_op = spec.autograd.backward_op
    ctx.backward_op = op_for("cpu", backward_op) if backward_op else None
    with torch.no_grad():
        forward = op(*detached)
        spec.autograd.setup_context(ctx, tuple(detached), forward)
        formula_grads = list(grads) + [None] * (len(forward) - len(grads))
        python = spec.autograd.backward(ctx, *formula_grads)
    python_flat = [
        t for i in differentiated for t in (python[i] if isinstance(python[i], list) else [python[i]])
    ]
    assert len(cpp) == len(python_flat)
    for a, b in zip(cpp, python_flat, strict=True):
        assert torch.equal(a, b)
