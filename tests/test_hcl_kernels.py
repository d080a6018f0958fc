"""Every fused HCL backend against the PyTorch reference: loss and student gradient over several
stage pairs, sizes that pooling does not divide (7x7 with level 4, overlapping windows), maps
smaller than some levels, widths below a level, every dtype, NCHW and channels_last. Tolerances
follow tests/tolerance.py (2x PyTorch's own error against a float64 truth)."""

import pytest
import torch

from tests.conftest import device_of, kernel_backends
from tests.tolerance import assert_close_to_truth
from tskd_fast import functional as F
from tskd_fast import reference

BACKENDS = kernel_backends()
STAGES = {
    "cifar-like": [(2, 5, 8, 8), (2, 6, 4, 4), (2, 3, 2, 2), (2, 7, 1, 1)],
    "imagenet-like": [(2, 3, 14, 14), (2, 5, 7, 7), (2, 4, 1, 1)],
    "odd": [(1, 19, 9, 5), (2, 3, 6, 3), (1, 2, 11, 13)],
    # The CPU kernel's NCHW paths: maps of up to 64 elements take 64 planes per task (here
    # 64 + 1 of them, and 33 in one partial task), up to 784 elements 16 planes (16 + 1), larger
    # ones one plane (pipelined over a thread's planes).
    "cpu paths": [(1, 17, 28, 28), (3, 11, 5, 5), (1, 65, 8, 8), (1, 3, 36, 30), (2, 5, 32, 32)],
}
SMALL = [(2, 5, 7, 7), (2, 3, 4, 4), (1, 17, 3, 5)]
# The Triton interpreter runs one program per plane at ~ms each: fewer planes.
TINY = [(1, 2, 7, 7), (1, 2, 4, 4), (1, 1, 3, 5)]


def small_for(backend):
    return TINY if backend == "triton" and device_of(backend) == "cpu" else SMALL


def dtypes_of(backend):
    found = [torch.float32, torch.float16, torch.bfloat16]
    if device_of(backend) == "cpu":
        found.append(torch.float64)
    return found


def make(shapes, device):
    students = [torch.randn(s, dtype=torch.float64, device=device) for s in shapes]
    teachers = [s + 0.7 * torch.randn_like(s) for s in students]
    return students, teachers


def run(fn, students, teachers, dtype, channels_last, levels=(4, 2, 1)):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    fs = [s.to(dtype).contiguous(memory_format=fmt).requires_grad_(True) for s in students]
    ft = [t.to(dtype).contiguous(memory_format=fmt) for t in teachers]
    loss = fn(fs, ft, levels)
    loss.backward()
    return loss.detach(), [f.grad for f in fs]


def check(backend, shapes, dtype, channels_last, levels=(4, 2, 1)):
    students, teachers = make(shapes, device_of(backend))
    loss, grads = run(
        lambda s, t, lv: F.hcl_loss(s, t, lv, backend=backend),
        students,
        teachers,
        dtype,
        channels_last,
        levels,
    )
    same, same_grads = run(reference.hcl_loss, students, teachers, dtype, channels_last, levels)
    truth, truth_grads = run(reference.hcl_loss, students, teachers, torch.float64, False, levels)
    assert loss.dtype == dtype and loss.dim() == 0
    assert_close_to_truth(loss, same, truth, dtype, f"{backend} loss")
    for i, (got, ref, tru) in enumerate(zip(grads, same_grads, truth_grads, strict=True)):
        assert_close_to_truth(got, ref, tru, dtype, f"{backend} grad of stage {i}")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("stages", list(STAGES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_reference_float32(backend, stages, channels_last):
    check(backend, STAGES[stages], torch.float32, channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype_index", range(4))
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_reference_every_dtype(backend, dtype_index, channels_last):
    dtypes = dtypes_of(backend)
    check(backend, small_for(backend), dtypes[dtype_index % len(dtypes)], channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("levels", [(3, 1), (5,), (), (2, 2)])
def test_other_levels(backend, levels):
    check(backend, [(1, 2, 7, 6), (1, 2, 3, 3)], torch.float32, False, levels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_without_gradient_and_scaled_backward(backend):
    students, teachers = make([(1, 2, 7, 7)], device_of(backend))
    fs, ft = students[0].float(), teachers[0].float()
    with torch.no_grad():
        plain = F.hcl_loss(fs, ft, backend=backend)
    torch.testing.assert_close(plain, reference.hcl_loss(fs, ft))
    z = fs.clone().requires_grad_(True)
    (3.0 * F.hcl_loss(z, ft, backend=backend)).backward()
    z_ref = fs.clone().requires_grad_(True)
    (3.0 * reference.hcl_loss(z_ref, ft)).backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_pairs_scaled_backward_and_a_student_without_gradient(backend):
    # Eager calls take all pairs in one autograd node: each student needing a gradient gets its
    # own, scaled by the incoming gradient; the others get none.
    students, teachers = make([(1, 3, 8, 8), (2, 2, 5, 5), (1, 2, 9, 7)], device_of(backend))
    needs = [True, False, True]

    def grads_of(fn):
        fs = [s.float().clone().requires_grad_(need) for s, need in zip(students, needs, strict=True)]
        loss = fn(fs, [t.float() for t in teachers])
        (2.5 * loss).backward()
        return loss.detach(), [f.grad for f in fs]

    loss, grads = grads_of(lambda s, t: F.hcl_loss(s, t, backend=backend))
    ref_loss, ref_grads = grads_of(reference.hcl_loss)
    torch.testing.assert_close(loss, ref_loss)
    assert grads[1] is None and ref_grads[1] is None
    for got, ref in ((grads[0], ref_grads[0]), (grads[2], ref_grads[2])):
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "cpu"])
def test_loss_is_deterministic(backend):
    students, teachers = make([(3, 40, 9, 9)], "cpu")
    first = run(
        lambda s, t, lv: F.hcl_loss(s, t, lv, backend=backend), students, teachers, torch.float32, True
    )
    again = run(
        lambda s, t, lv: F.hcl_loss(s, t, lv, backend=backend), students, teachers, torch.float32, True
    )
    assert torch.equal(first[0], again[0]) and torch.equal(first[1][0], again[1][0])
