"""Per-row DTD weights as a Triton kernel: the ops tskd_fast::dtd_weight_triton and
tskd_fast::dtd_temperature_triton (the weights, then the temperatures from them in torch ops).

Defined from the specs of tskd_fast.ops.dtd, the same as the C++ ops (csrc/cpu/dtd_kernel.h,
csrc/include/tskd_fast/dtd_math.h):
  flsw (mode 0): w = (1 - cos(z, v))^gamma, cos = z.v / ((|z| + 1e-4) (|v| + 1e-4)), 1 - cos
                 clamped to [0, 2]; with ka = 1 (ps) the teacher's values at its argmax and at
                 the label are swapped on rows whose argmax misses the label;
  cwsm (mode 1): w = 1 / (max softmax(z) + 1e-3).
One pass over the row in BLOCK_C-wide chunks, several short rows per program (the tile of
_config.row_block_config); math in float32 (float64 for float64 logits).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tskd_fast.ops.common import opmath_dtype, with_unit_class_stride
from tskd_fast.ops.dtd import DTD_TEMPERATURE, DTD_WEIGHT
from tskd_fast.ops.library import define_triton
from tskd_fast.ops.triton._config import RowBlockConfig, row_block_config
from tskd_fast.ops.triton._launch import (
    check_device_runs_triton,
    quiet_interpreter,
    raise_if_flagged,
    runs_in_interpreter,
    value_flag,
)
from tskd_fast.ops.triton._rowmath import first_max_index, nan_as_inf, rescale_unit, shift
from tskd_fast.reference.dtd import temperatures_from_weights

OP_NAME = f"tskd_fast::{DTD_WEIGHT.triton_name}"

FLSW_NORM_EPS = 1e-4  # added to each L2 norm (dtd_math.h kFlswNormEps)
CWSM_EPS = 1e-3  # added to the student's max probability (dtd_math.h kCwsmEps)
# Kernels may read only constexpr globals.
_FLSW_NORM_EPS = tl.constexpr(FLSW_NORM_EPS)
_CWSM_EPS = tl.constexpr(CWSM_EPS)


@triton.jit
def _dtd_weight_kernel(
    z_ptr,
    v_ptr,
    y_ptr,
    params_ptr,
    w_ptr,
    flag_ptr,
    n_rows,
    n_cols,
    z_row_stride,
    v_row_stride,
    ignore_index,
    gamma_arg,
    MODE: tl.constexpr,
    CHECK_LABELS: tl.constexpr,
    SWAP: tl.constexpr,
    PARAMS_IN_MEMORY: tl.constexpr,
    ACC: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    z_row = z_ptr + rows64 * z_row_stride
    v_row = v_ptr + rows64 * v_row_stride
    if CHECK_LABELS:
        # Labels are read (and so checked) only with knowledge adjustment, as in the C++ ops; one
        # out of range clears the launch's error flag (read by the host on the CPU, asserted on
        # asynchronously on CUDA) and is left out of the swap, so every access stays in bounds.
        label = tl.load(y_ptr + rows, mask=row_ok, other=ignore_index)
        in_range = (label >= 0) & (label < n_cols)
        invalid = row_ok & (label != ignore_index) & ~in_range
        tl.store(flag_ptr, 0, mask=tl.max(invalid.to(tl.int32), axis=0) > 0)

    if MODE == 0:
        # Float scalar arguments are float32 in Triton; float64 runs read gamma from memory.
        if PARAMS_IN_MEMORY:
            gamma = tl.load(params_ptr)
        else:
            gamma = gamma_arg
        dot = tl.zeros([ROWS], ACC)
        zz = tl.zeros([ROWS], ACC)
        vv = tl.zeros([ROWS], ACC)
        mv = tl.full([ROWS], float("-inf"), ACC)
        arg = tl.zeros([ROWS], tl.int32)
        for c0 in range(0, n_cols, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            ok = row_ok[:, None] & (cols < n_cols)[None, :]
            z = tl.load(z_row[:, None] + cols[None, :], mask=ok, other=0.0).to(ACC)
            v = tl.load(v_row[:, None] + cols[None, :], mask=ok, other=0.0).to(ACC)
            dot += tl.sum(z * v, axis=1)
            zz += tl.sum(z * z, axis=1)
            vv += tl.sum(v * v, axis=1)
            if SWAP:
                vm = tl.where(ok, nan_as_inf(v), float("-inf"))
                chunk_mv = tl.max(vm, axis=1)
                arg = tl.where(chunk_mv > mv, first_max_index(vm, chunk_mv, cols), arg)
                mv = tl.maximum(mv, chunk_mv)
        if SWAP:
            wrong = row_ok & (label != ignore_index) & in_range
            wrong = wrong & (arg < n_cols) & (arg.to(tl.int64) != label)
            z_arg = tl.load(z_row + arg, mask=wrong, other=0.0).to(ACC)
            v_arg = tl.load(v_row + arg, mask=wrong, other=0.0).to(ACC)
            z_label = tl.load(z_row + label, mask=wrong, other=0.0).to(ACC)
            v_label = tl.load(v_row + label, mask=wrong, other=0.0).to(ACC)
            # Swapping v at the argmax j and the label y changes z.v by (z_j - z_y)(v_y - v_j).
            dot += tl.where(wrong, (z_arg - z_label) * (v_label - v_arg), 0.0)
        cosine = dot / ((tl.sqrt(zz) + _FLSW_NORM_EPS) * (tl.sqrt(vv) + _FLSW_NORM_EPS))
        gap = 1.0 - cosine
        # A clamp by comparisons lets NaN through, as the C++ kernels and torch.clamp do.
        gap = tl.where(gap < 0.0, 0.0, tl.where(gap > 2.0, 2.0, gap))
        # pow without libdevice: exp(gamma log gap) gives 0 at gap = 0 for gamma > 0, and
        # x^0 = 1 for every x (NaN included) as pow does.
        w = tl.where(gamma == 0.0, 1.0, tl.exp(gamma * tl.log(gap)))
    else:
        m = tl.full([ROWS], float("-inf"), ACC)
        s = tl.zeros([ROWS], ACC)
        for c0 in range(0, n_cols, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            ok = row_ok[:, None] & (cols < n_cols)[None, :]
            z = tl.load(z_row[:, None] + cols[None, :], mask=ok, other=float("-inf")).to(ACC)
            m_new = tl.maximum(m, tl.max(nan_as_inf(z), axis=1))
            s = rescale_unit(m, m_new) * s + tl.sum(tl.exp(z - shift(m_new)[:, None]), axis=1)
            m = m_new
        # max softmax = 1 / sum exp(z - max z); NaN or +inf anywhere, or only -inf, gives NaN as
        # softmax does.
        w = 1.0 / (1.0 / s + _CWSM_EPS)
        w = tl.where(tl.abs(m) < float("inf"), w, float("nan"))
    tl.store(w_ptr + rows, w.to(ACC), mask=row_ok)


# Whether the kernels run in the Triton interpreter (which also runs them on CPU tensors).
INTERPRETED = runs_in_interpreter(_dtd_weight_kernel)


def launch_dtd_weight(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    ignore_index: int,
    config: RowBlockConfig | None = None,
    flag: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the kernel on checked inputs (unit class stride, contiguous target); returns w (B,)
    float32 (float64 for float64 logits). With ka != 0 the kernel clears `flag` (see
    _launch.value_flag; a scratch one when None) when a label is out of range. `config` overrides
    the launch shape. Call it on the inputs' device (common.device_guard)."""
    rows, classes = student.shape
    acc = opmath_dtype(student.dtype)
    weight = torch.empty((rows,), dtype=acc, device=student.device)
    cfg = config if config is not None else row_block_config(classes)
    params_in_memory = acc == torch.float64 and mode == 0
    params = torch.tensor([gamma], dtype=acc, device=student.device) if params_in_memory else weight
    # Label smoothing replaces the target distribution, not the logits: only ps changes flsw.
    check_labels = ka != 0 and target is not None
    swap = mode == 0 and ka == 1 and check_labels
    if flag is None:
        flag = value_flag(student.device) if check_labels else weight  # weight: never written
    grid = (triton.cdiv(rows, cfg.rows),)
    with quiet_interpreter(INTERPRETED):
        _dtd_weight_kernel[grid](
            student,
            teacher,
            target if check_labels else weight,
            params,
            weight,
            flag,
            rows,
            classes,
            student.stride(0),
            teacher.stride(0),
            ignore_index,
            gamma,
            MODE=mode,
            CHECK_LABELS=check_labels,
            SWAP=swap,
            PARAMS_IN_MEMORY=params_in_memory,
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            ROWS=cfg.rows,
            BLOCK_C=cfg.block_c,
            num_warps=cfg.num_warps,
        )
    return weight


_WHAT = "a target label is out of range (labels must be in [0, classes) or equal ignore_index)"


def name_bad_value(*args) -> None:
    """Raise the ValueError that names the bad label the kernel flagged."""
    DTD_WEIGHT.check_values(*args)


def dtd_weight_triton_impl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    ignore_index: int,
) -> torch.Tensor:
    """The op on inputs its spec checked, on their CUDA device (tskd_fast.ops.library)."""
    args = (student, teacher, target, mode, gamma, ka, ignore_index)
    check_device_runs_triton(student, INTERPRETED)
    student = with_unit_class_stride(student)
    teacher = with_unit_class_stride(teacher)
    if target is not None:
        target = target.contiguous()
    checked = target is not None and ka != 0
    flag = value_flag(student.device) if checked else None
    weight = launch_dtd_weight(student, teacher, target, mode, gamma, ka, ignore_index, flag=flag)
    if flag is not None:
        raise_if_flagged(flag, OP_NAME, _WHAT, lambda: name_bad_value(*args))
    return weight


def dtd_temperature_triton_impl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    ignore_index: int,
    t0: float,
    beta: float,
    min_temperature: float,
) -> torch.Tensor:
    weight = dtd_weight_triton_impl(student, teacher, target, mode, gamma, ka, ignore_index)
    return temperatures_from_weights(weight, t0, beta, min_temperature)


#: The op overloads, called like torch.ops.tskd_fast.dtd_weight.default / dtd_temperature.default.
dtd_weight_triton = define_triton(DTD_WEIGHT, dtd_weight_triton_impl)
dtd_temperature_triton = define_triton(DTD_TEMPERATURE, dtd_temperature_triton_impl)
