"""Input checks of the Triton ops, with the messages of the C++ ops (csrc/checks.cpp).

Every backend rejects the same inputs with the same words, so the messages copy the C++ ones
(ATen's spelling of dtypes and sizes included); only the op name in front differs. All errors are
RuntimeError, as TORCH_CHECK raises.
"""

from __future__ import annotations

import math

import torch

# How c10 prints a ScalarType, so that messages match the C++ ops word for word.
_SCALAR_TYPE_NAMES = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}

LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def scalar_type_name(dtype: torch.dtype) -> str:
    return _SCALAR_TYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _sizes(t: torch.Tensor) -> str:
    return str(list(t.shape))


def _num(x: float) -> str:
    """A number as C++'s ostream prints it (6 significant digits, no trailing zeros)."""
    return f"{x:g}"


def _check(cond: bool, op: str, *parts: object) -> None:
    if not cond:
        raise RuntimeError(op + "".join(str(p) for p in parts))


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in (and return losses/weights in) for logits of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_logit_pair(student: torch.Tensor, teacher: torch.Tensor, op: str) -> None:
    _check(
        student.dim() == 2,
        op,
        ": student_logits must be 2-D (batch, classes), got ",
        student.dim(),
        "-D with shape ",
        _sizes(student),
    )
    _check(
        teacher.shape == student.shape,
        op,
        ": teacher_logits must have the shape of student_logits ",
        _sizes(student),
        ", got ",
        _sizes(teacher),
    )
    _check(student.shape[0] > 0, op, ": empty batch (student_logits has 0 rows)")
    _check(student.shape[1] > 0, op, ": student_logits has 0 classes")
    dtype = student.dtype
    _check(
        dtype in LOGIT_DTYPES,
        op,
        ": student_logits must be float32, float16, bfloat16 or float64, got ",
        scalar_type_name(dtype),
    )
    _check(
        teacher.dtype == dtype,
        op,
        ": teacher_logits must have the dtype of student_logits (",
        scalar_type_name(dtype),
        "), got ",
        scalar_type_name(teacher.dtype),
    )
    _check(
        teacher.device == student.device,
        op,
        ": teacher_logits is on ",
        teacher.device,
        " but student_logits is on ",
        student.device,
    )
    _check(
        dtype != torch.float64 or student.device.type == "cpu",
        op,
        ": float64 logits are supported on the CPU only",
    )


def check_target(target: torch.Tensor | None, student: torch.Tensor, op: str) -> None:
    if target is None:
        return
    _check(
        target.dim() == 1 and target.shape[0] == student.shape[0],
        op,
        ": target must have shape (batch,) = (",
        student.shape[0],
        "), got ",
        _sizes(target),
    )
    _check(target.dtype == torch.int64, op, ": target must be int64, got ", scalar_type_name(target.dtype))
    _check(
        target.device == student.device,
        op,
        ": target is on ",
        target.device,
        " but student_logits is on ",
        student.device,
    )


def check_ka(ka: int, target: torch.Tensor | None, op: str) -> None:
    _check(0 <= ka <= 2, op, ": ka must be 0 (none), 1 (ps) or 2 (lsr), got ", ka)
    _check(
        target is not None or ka == 0,
        op,
        ": knowledge adjustment (ka) needs target labels, but target is None",
    )


def check_kd_loss_inputs(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    temperature: torch.Tensor,
    ka: int,
    lsr_p: float,
    ce_weight: float,
    op: str,
) -> None:
    """Shapes, dtypes, devices and scalar arguments of kd_loss (as check_kd_loss_inputs in C++)."""
    check_logit_pair(student, teacher, op)
    check_target(target, student, op)
    check_ka(ka, target, op)
    _check(
        target is not None or ce_weight == 0.0,
        op,
        ": ce_weight != 0 needs target labels, but target is None",
    )
    _check(0.0 < lsr_p <= 1.0, op, ": lsr_p must be in (0, 1], got ", _num(lsr_p))
    _check(math.isfinite(ce_weight), op, ": ce_weight must be finite, got ", _num(ce_weight))
    _check(
        temperature.dim() == 1 and temperature.shape[0] == student.shape[0],
        op,
        ": temperature must have shape (batch,) = (",
        student.shape[0],
        "), got ",
        _sizes(temperature),
    )
    tdtype = opmath_dtype(student.dtype)
    _check(
        temperature.dtype == tdtype,
        op,
        ": temperature must be ",
        scalar_type_name(tdtype),
        " for ",
        scalar_type_name(student.dtype),
        " logits, got ",
        scalar_type_name(temperature.dtype),
    )
    _check(
        temperature.device == student.device,
        op,
        ": temperature is on ",
        temperature.device,
        " but student_logits is on ",
        student.device,
    )


def check_dtd_weight_inputs(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    mode: int,
    gamma: float,
    ka: int,
    op: str,
) -> None:
    """Shapes, dtypes, devices and scalar arguments of dtd_weight (as check_dtd_weight_inputs)."""
    check_logit_pair(student, teacher, op)
    check_target(target, student, op)
    _check(mode in (0, 1), op, ": mode must be 0 (flsw) or 1 (cwsm), got ", mode)
    check_ka(ka, target, op)
    _check(
        math.isfinite(gamma) and gamma >= 0.0,
        op,
        ": gamma must be finite and >= 0, got ",
        _num(gamma),
    )


def _label_message(op: str, index: int, value: int, classes: int, ignore_index: int) -> str:
    return (
        f"{op}: target[{index}] = {value} is out of range: labels must be in [0, {classes}) "
        f"or equal ignore_index ({ignore_index})"
    )


def value_flag(device: torch.device) -> torch.Tensor:
    """The kernels' error flag: (1,) int32 holding 1, which a kernel clears to 0 when a value check
    (a label out of range, a temperature not finite and > 0) fails on any row."""
    return torch.ones((1,), dtype=torch.int32, device=device)


def name_bad_labels(target: torch.Tensor, classes: int, ignore_index: int, op: str) -> None:
    """Raise naming the first label outside [0, classes) and != ignore_index (CPU tensors)."""
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise RuntimeError(_label_message(op, index, int(target[index]), classes, ignore_index))


def name_bad_temperatures(temperature: torch.Tensor, op: str) -> None:
    """Raise naming the first temperature that is not finite and > 0 (CPU tensors)."""
    ok = (temperature > 0) & torch.isfinite(temperature)
    if not bool(ok.all()):
        index = int((~ok).nonzero()[0, 0])
        raise RuntimeError(
            f"{op}: temperature[{index}] = {_num(float(temperature[index]))} must be finite and > 0"
        )


def raise_if_flagged(
    flag: torch.Tensor,
    op: str,
    target: torch.Tensor | None,
    classes: int,
    ignore_index: int,
    temperature: torch.Tensor | None = None,
) -> None:
    """Act on the error flag a kernel wrote (see value_flag), as the C++ ops act on bad values.

    On the CPU (the interpreter) the flag is read for free: when a kernel cleared it, the inputs are
    searched for the first bad label, then the first bad temperature, and the error names it,
    with the C++ CPU op's words. On CUDA, reading the flag would synchronise the stream on every
    call, so one asynchronous device assert checks it instead, as the CUDA C++ kernels assert in
    the kernel: the next synchronising call fails and the CUDA context is lost, as after any
    device assert. `target`/`temperature` are None when the kernel did not check them.
    """
    if flag.device.type != "cpu":
        what = "a target label is out of range (labels must be in [0, classes) or equal ignore_index)"
        if temperature is not None:
            what += " or a temperature is not finite and > 0"
        torch._assert_async(flag, f"{op}: {what}")
        return
    if bool(flag[0]):
        return
    if target is not None:
        name_bad_labels(target, classes, ignore_index, op)
    if temperature is not None:
        name_bad_temperatures(temperature, op)
    raise RuntimeError(
        f"{op}: the kernel flagged an invalid label or temperature that the host check did not find"
    )


def check_device_runs_triton(student: torch.Tensor, interpreted: bool, op: str) -> None:
    """CPU tensors run only in the Triton interpreter; say so instead of failing in the launcher."""
    _check(
        student.device.type != "cpu" or interpreted,
        op,
        ": CPU tensors run only in the Triton interpreter (TRITON_INTERPRET=1 set before triton is ",
        "imported); use CUDA tensors, or the 'cpu' backend",
    )


def with_unit_class_stride(logits: torch.Tensor) -> torch.Tensor:
    """Row-major view with unit stride along classes; copies only when the classes are strided."""
    if logits.stride(1) == 1 and logits.stride(0) >= logits.shape[1]:
        return logits
    return logits.contiguous()
