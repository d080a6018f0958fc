"""The fused ConvLSTM gate op as Triton kernels: tskd_fast::convlstm_gates_triton and its
backward tskd_fast::convlstm_gates_backward_triton.

Defined from the specs of tskd_fast.ops.convlstm (schemas, checks, fake kernels, autograd
formula), the same as the C++ ops (csrc/cpu/convlstm_kernel.h, csrc/include/tskd_fast/
convlstm_math.h). Each sample is walked as (rows, cols) positions (rows = 1,
cols = C_h*H*W for NCHW; rows = H*W, cols = C_h for channels_last), a program owns BLOCK
positions: of one sample (forward, backward without peephole sums), or of every sample in batch
order (backward with peephole sums: the sums stay in registers, no atomics, deterministic).
Math in float32 (float64 for float64 inputs); tanh and sigmoid from exp of non-positive values.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tskd_fast.ops.common import kernel_channels_last, kernel_memory_format, opmath_dtype
from tskd_fast.ops.convlstm import CONVLSTM_GATES, CONVLSTM_GATES_BACKWARD
from tskd_fast.ops.library import define_triton
from tskd_fast.ops.triton._launch import check_device_runs_triton, quiet_interpreter, runs_in_interpreter

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
# The kernels' layout


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


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def convlstm_gates_triton_impl(
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None,
    w_co: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_device_runs_triton(gates, INTERPRETED)
    fmt = kernel_memory_format(kernel_channels_last(gates))
    layout = _Layout(c_prev, fmt, BLOCK)
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


def convlstm_gates_backward_triton_impl(
    grad_h: torch.Tensor | None,
    grad_c: torch.Tensor | None,
    gates: torch.Tensor,
    c_prev: torch.Tensor,
    w_ci: torch.Tensor | None,
    w_cf: torch.Tensor | None,
    w_co: torch.Tensor | None,
    peephole_grads: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    check_device_runs_triton(gates, INTERPRETED)
    fmt = kernel_memory_format(kernel_channels_last(gates))
    layout = _Layout(c_prev, fmt, BACKWARD_BLOCK)
    peepholes = (w_ci, w_cf, w_co)
    gates = gates.contiguous(memory_format=fmt)
    c_prev = c_prev.contiguous(memory_format=fmt)
    grad_h = grad_h.contiguous(memory_format=fmt) if grad_h is not None else None
    grad_c = grad_c.contiguous(memory_format=fmt) if grad_c is not None else None
    ws = [_peephole_rows(w, c_prev, layout.channels_last) for w in peepholes]
    grad_gates = torch.empty(gates.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
    grad_c_prev = torch.empty(c_prev.shape, dtype=gates.dtype, device=gates.device, memory_format=fmt)
    acc = opmath_dtype(gates.dtype)
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


#: The op overloads, called like torch.ops.tskd_fast.convlstm_gates(_backward).default.
convlstm_gates_backward_triton = define_triton(CONVLSTM_GATES_BACKWARD, convlstm_gates_backward_triton_impl)
convlstm_gates_triton = define_triton(CONVLSTM_GATES, convlstm_gates_triton_impl)
