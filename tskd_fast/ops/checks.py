"""The pieces of the ops' Python argument checks that several families share: the twins of
csrc/checks/common.cpp and csrc/checks/logits.cpp, with the same words.

Every check raises ValueError naming the argument. Shapes, dtypes and devices are printed as
Python prints them, in C++ too (csrc/include/tskd_fast/checks.h), so that a bad input reads the
same whichever backend rejects it; numbers as C++ streams print them ("{:g}").
"""

from __future__ import annotations

import torch

from tskd_fast.ops.common import opmath_dtype

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def shape_str(shape) -> str:
    """A shape as Python prints a tuple: "(5, 11)", "(5,)", "()"."""
    return str(tuple(int(s) for s in shape))


def num(x: float) -> str:
    """A float as C++ streams print it (6 significant digits)."""
    return f"{x:g}"


def fail(message: str) -> None:
    raise ValueError(message)


def check_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_feature_map(t: torch.Tensor, name: str) -> None:
    """A (N, C, H, W) map of a kernel dtype (float64 on the CPU only), not empty."""
    check_tensor(t, name)
    if t.dim() != 4:
        fail(f"{name} must be 4-D (N, C, H, W), got shape {shape_str(t.shape)}")
    if t.dtype not in KERNEL_DTYPES:
        fail(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if t.numel() == 0:
        fail(f"{name} is empty (shape {shape_str(t.shape)})")
    if t.dtype == torch.float64 and t.device.type != "cpu":
        fail(f"float64 {name} is supported on the CPU only")


def check_dtype_and_device(
    t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str, dtype: torch.dtype
) -> None:
    if t.dtype != dtype:
        fail(f"{name} must be {dtype}, got {t.dtype}")
    if t.device != ref.device:
        fail(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def check_logit_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    """(B, C) student and teacher logits of one kernel dtype (float64 on the CPU only), on one device."""
    check_tensor(student, "student_logits")
    check_tensor(teacher, "teacher_logits")
    if student.dim() != 2:
        fail(f"student_logits must be 2-D (batch, classes), got shape {shape_str(student.shape)}")
    if teacher.shape != student.shape:
        fail(
            f"teacher_logits must have the shape of student_logits {shape_str(student.shape)}, "
            f"got {shape_str(teacher.shape)}"
        )
    if student.shape[0] == 0:
        fail("student_logits is an empty batch (0 rows)")
    if student.shape[1] == 0:
        fail("student_logits has 0 classes")
    if student.dtype not in KERNEL_DTYPES:
        fail(f"student_logits must be float32, float16, bfloat16 or float64, got {student.dtype}")
    if teacher.dtype != student.dtype:
        fail(f"teacher_logits must have the dtype of student_logits ({student.dtype}), got {teacher.dtype}")
    if teacher.device != student.device:
        fail(f"teacher_logits is on {teacher.device} but student_logits is on {student.device}")
    if student.dtype == torch.float64 and student.device.type != "cpu":
        fail("float64 logits are supported on the CPU only")


def check_target(target: torch.Tensor | None, student: torch.Tensor) -> None:
    """Absent, or (B,) int64 class indices on the logits' device."""
    if target is None:
        return
    check_tensor(target, "target")
    rows = student.shape[0]
    if target.dim() != 1 or target.shape[0] != rows:
        fail(f"target must have shape (batch,) = ({rows},), got {shape_str(target.shape)}")
    if target.dtype != torch.int64:
        fail(f"target must be torch.int64, got {target.dtype}")
    if target.device != student.device:
        fail(f"target is on {target.device} but student_logits is on {student.device}")


def check_ka(ka: int, target: torch.Tensor | None) -> None:
    """ka: 0 none, 1 probability shift, 2 label smoothing; any but 0 needs the labels."""
    if not 0 <= ka <= 2:
        fail(f"ka must be 0 (none), 1 (ps) or 2 (lsr), got {ka}")
    if target is None and ka != 0:
        fail(f"ka={ka} ({'ps' if ka == 1 else 'lsr'}) needs target labels, but target is None")


def check_labels(target: torch.Tensor, classes: int, ignore_index: int) -> None:
    """Labels in [0, classes) or ignore_index (reads the values: CPU tensors)."""
    low, high = (int(v) for v in torch.aminmax(target))  # one op: the usual all-valid case is cheap
    if 0 <= low and high < classes:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        fail(
            f"target[{index}] = {int(target[index])} is out of range: labels must be in [0, {classes}) "
            f"or equal ignore_index ({ignore_index})"
        )


def opmath_of(student: torch.Tensor) -> torch.dtype:
    return opmath_dtype(student.dtype)
