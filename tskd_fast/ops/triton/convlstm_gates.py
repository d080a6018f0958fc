"""The fused ConvLSTM gate op as Triton kernels: tskd_fast::convlstm_gates_triton and its
backward tskd_fast::convlstm_gates_backward_triton.

Same signatures, layouts and semantics as the C++ ops (csrc/cpu/convlstm_gates_kernel.h,
csrc/include/tskd_fast/convlstm_math.h); the autograd formula and fake kernels are the shared
ones of tskd_fast.ops.convlstm_gates. Each sample is walked as (rows, cols) positions (rows = 1,
cols = C_h*H*W for NCHW; rows = H*W, cols = C_h for channels_last), a program owns BLOCK
positions: of one sample (forward, backward without peephole sums), or of every sample in batch
order (backward with peephole sums: the sums stay in registers, no atomics, deterministic).
Math in float32 (float64 for float64 inputs); tanh and sigmoid from exp of non-positive values.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from tskd_fast.ops.convlstm_gates import kernel_memory_format, register_convlstm_gates_ops
from tskd_fast.ops.triton import _checks
from tskd_fast.ops.triton._launch import quiet_interpreter, runs_in_interpreter

OP_NAME = "tskd_fast::convlstm_gates_triton"
BACKWARD_OP_NAME = "tskd_fast::convlstm_gates_backward_triton"

# Positions per program and warps per program on the GPU. The forward holds 8 positions per
# thread (32 B of each float32 operand); the backward keeps about twice the live values per
# position and spills at 8 on sm_90 (ptxas: 255 registers and a stack), so it holds 4.
BLOCK = 1024
BACKWARD_BLOCK = 512
NUM_WARPS = 4


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0, r, e * r)


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _load(ptr, offsets, mask, ACC: tl.constexpr):
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(ACC)


@triton.jit
def _convlstm_forward_kernel(
    g_ptr,
    cp_ptr,
    wci_ptr,
    wcf_ptr,
    wco_ptr,
    h_ptr,
    c_ptr,
    n_pos,
    n_cols,
    n_blocks,
    gate_batch_stride,
    gate_row_stride,
    gate_block,
    HAS_CI: tl.constexpr,
    HAS_CF: tl.constexpr,
    HAS_CO: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)
    pos = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    ok = pos < n_pos
    gate = b * gate_batch_stride + (pos // n_cols) * gate_row_stride + pos % n_cols
    state = b * n_pos + pos
    c_prev = _load(cp_ptr, state, ok, ACC)
    a_i = _load(g_ptr, gate, ok, ACC)
    a_f = _load(g_ptr, gate + gate_block, ok, ACC)
    a_g = _load(g_ptr, gate + 2 * gate_block, ok, ACC)
    a_o = _load(g_ptr, gate + 3 * gate_block, ok, ACC)
    if HAS_CI:
        a_i += _load(wci_ptr, pos, ok, ACC) * c_prev
    if HAS_CF:
        a_f += _load(wcf_ptr, pos, ok, ACC) * c_prev
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * _tanh(a_g)
    if HAS_CO:
        a_o += _load(wco_ptr, pos, ok, ACC) * c
    h = _sigmoid(a_o) * _tanh(c)
    tl.store(h_ptr + state, h.to(h_ptr.dtype.element_ty), mask=ok)
    tl.store(c_ptr + state, c.to(c_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _backward_sample(
    b,
    pos,
    ok,
    dh_ptr,
    dc_ptr,
    g_ptr,
    cp_ptr,
    w_ci,
    w_cf,
    w_co,
    dg_ptr,
    dcp_ptr,
    n_pos,
    n_cols,
    gate_batch_stride,
    gate_row_stride,
    gate_block,
    HAS_DH: tl.constexpr,
    HAS_DC: tl.constexpr,
    HAS_CI: tl.constexpr,
    HAS_CF: tl.constexpr,
    HAS_CO: tl.constexpr,
    ACC: tl.constexpr,
):
    """Writes the gradients of sample b at `pos`; returns the peephole terms da_i c_prev,
    da_f c_prev and da_o c."""
    gate = b * gate_batch_stride + (pos // n_cols) * gate_row_stride + pos % n_cols
    state = b * n_pos + pos
    c_prev = _load(cp_ptr, state, ok, ACC)
    a_i = _load(g_ptr, gate, ok, ACC)
    a_f = _load(g_ptr, gate + gate_block, ok, ACC)
    a_g = _load(g_ptr, gate + 2 * gate_block, ok, ACC)
    a_o = _load(g_ptr, gate + 3 * gate_block, ok, ACC)
    if HAS_CI:
        a_i += w_ci * c_prev
    if HAS_CF:
        a_f += w_cf * c_prev
    i = _sigmoid(a_i)
    f = _sigmoid(a_f)
    g = _tanh(a_g)
    c = f * c_prev + i * g
    if HAS_CO:
        a_o += w_co * c
    o = _sigmoid(a_o)
    k = _tanh(c)
    dh = _load(dh_ptr, state, ok, ACC) if HAS_DH else tl.zeros_like(c)
    dc = _load(dc_ptr, state, ok, ACC) if HAS_DC else tl.zeros_like(c)
    dh_o = dh * o
    da_o = dh_o * k * (1.0 - o)
    dc += dh_o * (1.0 - k * k)
    if HAS_CO:
        dc += da_o * w_co
    da_i = dc * i * g * (1.0 - i)
    da_f = dc * c_prev * f * (1.0 - f)
    da_g = dc * i * (1.0 - g * g)
    dc_prev = dc * f
    if HAS_CI:
        dc_prev += da_i * w_ci
    if HAS_CF:
        dc_prev += da_f * w_cf
    out = dg_ptr.dtype.element_ty
    tl.store(dg_ptr + gate, da_i.to(out), mask=ok)
    tl.store(dg_ptr + gate + gate_block, da_f.to(out), mask=ok)
    tl.store(dg_ptr + gate + 2 * gate_block, da_g.to(out), mask=ok)
    tl.store(dg_ptr + gate + 3 * gate_block, da_o.to(out), mask=ok)
    tl.store(dcp_ptr + state, dc_prev.to(out), mask=ok)
    return da_i * c_prev, da_f * c_prev, da_o * c


@triton.jit
def _convlstm_backward_kernel(
    dh_ptr,
    dc_ptr,
    g_ptr,
    cp_ptr,
    wci_ptr,
    wcf_ptr,
    wco_ptr,
    dg_ptr,
    dcp_ptr,
    sci_ptr,
    scf_ptr,
    sco_ptr,
    n_batch,
    n_pos,
    n_cols,
    n_blocks,
    gate_batch_stride,
    gate_row_stride,
    gate_block,
    HAS_DH: tl.constexpr,
    HAS_DC: tl.constexpr,
    HAS_CI: tl.constexpr,
    HAS_CF: tl.constexpr,
    HAS_CO: tl.constexpr,
    SUMS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    pos = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    ok = pos < n_pos
    zero = tl.zeros([BLOCK], ACC)
    w_ci = _load(wci_ptr, pos, ok, ACC) if HAS_CI else zero
    w_cf = _load(wcf_ptr, pos, ok, ACC) if HAS_CF else zero
    w_co = _load(wco_ptr, pos, ok, ACC) if HAS_CO else zero
    if SUMS:
        sum_ci = zero
        sum_cf = zero
        sum_co = zero
        for b in range(0, n_batch):
            t_ci, t_cf, t_co = _backward_sample(
                tl.full([], 0, tl.int64) + b,
                pos,
                ok,
                dh_ptr,
                dc_ptr,
                g_ptr,
                cp_ptr,
                w_ci,
                w_cf,
                w_co,
                dg_ptr,
                dcp_ptr,
                n_pos,
                n_cols,
                gate_batch_stride,
                gate_row_stride,
                gate_block,
                HAS_DH,
                HAS_DC,
                HAS_CI,
                HAS_CF,
                HAS_CO,
                ACC,
            )
            sum_ci += t_ci
            sum_cf += t_cf
            sum_co += t_co
        if HAS_CI:
            tl.store(sci_ptr + pos, sum_ci, mask=ok)
        if HAS_CF:
            tl.store(scf_ptr + pos, sum_cf, mask=ok)
        if HAS_CO:
            tl.store(sco_ptr + pos, sum_co, mask=ok)
    else:
        b = (pid // n_blocks).to(tl.int64)
        _backward_sample(
            b,
            pos,
            ok,
            dh_ptr,
            dc_ptr,
            g_ptr,
            cp_ptr,
            w_ci,
            w_cf,
            w_co,
            dg_ptr,
            dcp_ptr,
            n_pos,
            n_cols,
            gate_batch_stride,
            gate_row_stride,
            gate_block,
            HAS_DH,
            HAS_DC,
            HAS_CI,
            HAS_CF,
            HAS_CO,
            ACC,
        )


# Whether the kernels run in the Triton interpreter (which also runs them on CPU tensors).
INTERPRETED = runs_in_interpreter(_convlstm_forward_kernel)


# ---------------------------------------------------------------------------------------------
# Checks (the messages of csrc/convlstm_checks.cpp) and the kernels' layout


def _check_peephole(w, name, gates, c_prev, op):
    if w is None:
        return
    plane = [c_prev.shape[1], c_prev.shape[2], c_prev.shape[3]]
    _checks._check(
        list(w.shape) in (plane, [1, *plane]),
        op,
        f": {name} must have shape (C_h, H, W) = {plane} or (1, C_h, H, W), got {list(w.shape)}",
    )
    _checks._check(
        w.dtype == gates.dtype,
        op,
        f": {name} must have the dtype of gates ({_checks.scalar_type_name(gates.dtype)}), got ",
        _checks.scalar_type_name(w.dtype),
    )
    _checks._check(w.device == gates.device, op, f": {name} is on {w.device} but gates is on {gates.device}")


def check_convlstm_gates_inputs(gates, c_prev, w_ci, w_cf, w_co, op: str) -> None:
    """As check_convlstm_gates_inputs in C++."""
    _checks._check(
        c_prev.dim() == 4,
        op,
        f": c_prev must be 4-D (B, C_h, H, W), got {c_prev.dim()}-D with shape {list(c_prev.shape)}",
    )
    expected = [c_prev.shape[0], 4 * c_prev.shape[1], c_prev.shape[2], c_prev.shape[3]]
    _checks._check(
        list(gates.shape) == expected,
        op,
        f": gates must have shape (B, 4*C_h, H, W) = {expected} for c_prev of shape "
        f"{list(c_prev.shape)}, got {list(gates.shape)}",
    )
    name = _checks.scalar_type_name
    _checks._check(
        gates.dtype in _checks.LOGIT_DTYPES,
        op,
        ": gates must be float32, float16, bfloat16 or float64, got ",
        name(gates.dtype),
    )
    _checks._check(
        c_prev.dtype == gates.dtype,
        op,
        f": c_prev must have the dtype of gates ({name(gates.dtype)}), got {name(c_prev.dtype)}",
    )
    _checks._check(
        c_prev.device == gates.device, op, f": c_prev is on {c_prev.device} but gates is on {gates.device}"
    )
    _checks._check(
        gates.dtype != torch.float64 or gates.device.type == "cpu",
        op,
        ": float64 gates are supported on the CPU only",
    )
    for w, w_name in ((w_ci, "w_ci"), (w_cf, "w_cf"), (w_co, "w_co")):
        _check_peephole(w, w_name, gates, c_prev, op)


def _check_state_grad(grad, name, c_prev, op):
    if grad is None:
        return
    _checks._check(
        grad.shape == c_prev.shape,
        op,
        f": {name} must have the shape of c_prev {list(c_prev.shape)}, got {list(grad.shape)}",
    )
    type_name = _checks.scalar_type_name
    _checks._check(
        grad.dtype == c_prev.dtype,
        op,
        f": {name} must have the dtype of gates ({type_name(c_prev.dtype)}), got {type_name(grad.dtype)}",
    )
    _checks._check(
        grad.device == c_prev.device, op, f": {name} is on {grad.device} but gates is on {c_prev.device}"
    )


class _Layout:
    """The (rows, cols) walk of one sample and the gate strides (csrc ConvLstmLayout), cut into
    blocks of `block` positions."""

    def __init__(self, c_prev: torch.Tensor, fmt: torch.memory_format, block: int):
        batch, hidden, height, width = c_prev.shape
        pixels = height * width
        self.batch = batch
        self.channels_last = fmt == torch.channels_last
        self.gate_batch_stride = 4 * hidden * pixels
        if self.channels_last:
            self.rows, self.cols = pixels, hidden
            self.gate_row_stride, self.gate_block = 4 * hidden, hidden
        else:
            self.rows, self.cols = 1, hidden * pixels
            self.gate_row_stride, self.gate_block = 0, hidden * pixels
        self.positions = self.rows * self.cols
        self.block = block
        self.blocks = triton.cdiv(self.positions, block) if self.positions else 0


def _peephole_rows(w, c_prev, channels_last):
    if w is None:
        return None
    plane = w.reshape(c_prev.shape[1:])
    return plane.permute(1, 2, 0).contiguous() if channels_last else plane.contiguous()


def _peephole_grad(sums, w, channels_last):
    hidden, height, width = w.shape[-3:]
    if channels_last:
        plane = sums.view(height, width, hidden).permute(2, 0, 1).contiguous()
    else:
        plane = sums.view(hidden, height, width)
    return plane.to(w.dtype).reshape(w.shape)


def _device_guard(t: torch.Tensor):
    """Triton launches on the current device: make it the tensors' one."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _convlstm_gates_triton_impl(
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None,
    w_co: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_convlstm_gates_inputs(gates, c_prev, w_ci, w_cf, w_co, OP_NAME)
    _checks.check_device_runs_triton(gates, INTERPRETED, OP_NAME)
    fmt = kernel_memory_format(gates)
    layout = _Layout(c_prev, fmt, BLOCK)
    with _device_guard(gates):
        gates = gates.contiguous(memory_format=fmt)
        c_prev = c_prev.contiguous(memory_format=fmt)
        ws = [_peephole_rows(w, c_prev, layout.channels_last) for w in (w_ci, w_cf, w_co)]
        h = torch.empty(c_prev.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
        c = torch.empty(c_prev.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
        grid = (layout.blocks * layout.batch,)
        if grid[0] > 0:
            with quiet_interpreter(INTERPRETED):
                _convlstm_forward_kernel[grid](
                    gates,
                    c_prev,
                    *(w if w is not None else c_prev for w in ws),
                    h,
                    c,
                    layout.positions,
                    layout.cols,
                    layout.blocks,
                    layout.gate_batch_stride,
                    layout.gate_row_stride,
                    layout.gate_block,
                    HAS_CI=ws[0] is not None,
                    HAS_CF=ws[1] is not None,
                    HAS_CO=ws[2] is not None,
                    ACC=_acc(gates.dtype),
                    BLOCK=layout.block,
                    num_warps=NUM_WARPS,
                )
    return h, c


def _convlstm_gates_backward_triton_impl(
    grad_h: torch.Tensor | None,
    grad_c: torch.Tensor | None,
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None,
    w_cf: torch.Tensor | None,
    w_co: torch.Tensor | None,
    peephole_grads: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    op = BACKWARD_OP_NAME
    check_convlstm_gates_inputs(gates, c_prev, w_ci, w_cf, w_co, op)
    _check_state_grad(grad_h, "grad_h", c_prev, op)
    _check_state_grad(grad_c, "grad_c", c_prev, op)
    _checks.check_device_runs_triton(gates, INTERPRETED, op)
    fmt = kernel_memory_format(gates)
    layout = _Layout(c_prev, fmt, BACKWARD_BLOCK)
    peepholes = (w_ci, w_cf, w_co)
    with _device_guard(gates):
        gates = gates.contiguous(memory_format=fmt)
        c_prev = c_prev.contiguous(memory_format=fmt)
        grad_h = grad_h.contiguous(memory_format=fmt) if grad_h is not None else None
        grad_c = grad_c.contiguous(memory_format=fmt) if grad_c is not None else None
        ws = [_peephole_rows(w, c_prev, layout.channels_last) for w in peepholes]
        grad_gates = torch.empty(gates.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
        grad_c_prev = torch.empty(c_prev.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
        acc = _checks.opmath_dtype(gates.dtype)
        sums = [
            torch.empty((layout.rows, layout.cols), dtype=acc, device=gates.device)
            if peephole_grads and w is not None
            else None
            for w in ws
        ]
        with_sums = any(s is not None for s in sums)
        grid = (layout.blocks * (1 if with_sums else layout.batch),)
        if grid[0] > 0:
            with quiet_interpreter(INTERPRETED):
                _convlstm_backward_kernel[grid](
                    grad_h if grad_h is not None else c_prev,
                    grad_c if grad_c is not None else c_prev,
                    gates,
                    c_prev,
                    *(w if w is not None else c_prev for w in ws),
                    grad_gates,
                    grad_c_prev,
                    *(s if s is not None else grad_c_prev for s in sums),
                    layout.batch,
                    layout.positions,
                    layout.cols,
                    layout.blocks,
                    layout.gate_batch_stride,
                    layout.gate_row_stride,
                    layout.gate_block,
                    HAS_DH=grad_h is not None,
                    HAS_DC=grad_c is not None,
                    HAS_CI=ws[0] is not None,
                    HAS_CF=ws[1] is not None,
                    HAS_CO=ws[2] is not None,
                    SUMS=with_sums,
                    ACC=_acc(gates.dtype),
                    BLOCK=layout.block,
                    num_warps=NUM_WARPS,
                )
        peephole_out = [
            _peephole_grad(s, w, layout.channels_last) if s is not None else gates.new_empty((0,))
            for s, w in zip(sums, peepholes, strict=True)
        ]
    return (grad_gates, grad_c_prev, *peephole_out)


_forward_def = torch.library.custom_op(
    OP_NAME,
    _convlstm_gates_triton_impl,
    mutates_args=(),
    device_types=("cuda", "cpu"),
    schema=(
        "(Tensor gates, Tensor c_prev, Tensor? w_ci=None, Tensor? w_cf=None, Tensor? w_co=None) "
        "-> (Tensor h, Tensor c)"
    ),
)
_backward_def = torch.library.custom_op(
    BACKWARD_OP_NAME,
    _convlstm_gates_backward_triton_impl,
    mutates_args=(),
    device_types=("cuda", "cpu"),
    schema=(
        "(Tensor? grad_h, Tensor? grad_c, Tensor gates, Tensor c_prev, Tensor? w_ci, Tensor? w_cf, "
        "Tensor? w_co, bool peephole_grads) -> (Tensor grad_gates, Tensor grad_c_prev, "
        "Tensor grad_w_ci, Tensor grad_w_cf, Tensor grad_w_co)"
    ),
)

#: The op overloads, called like torch.ops.tskd_fast.convlstm_gates(_backward).default.
convlstm_gates_triton = torch.ops.tskd_fast.convlstm_gates_triton.default
convlstm_gates_backward_triton = torch.ops.tskd_fast.convlstm_gates_backward_triton.default

register_convlstm_gates_ops(_forward_def, _backward_def, convlstm_gates_backward_triton)
