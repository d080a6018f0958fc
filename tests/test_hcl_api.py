"""tskd_fast.reference.hcl_loss against the loss written out (adaptive windows spelled by hand),
and the argument checks of tskd_fast.functional.hcl_loss."""

import math

import pytest
import torch

from tskd_fast import functional as F
from tskd_fast import reference


def windows(size: int, level: int) -> list[tuple[int, int]]:
    """Adaptive pooling windows [floor(i * size / l), ceil((i + 1) * size / l))."""
    return [((i * size) // level, math.ceil((i + 1) * size / level)) for i in range(level)]


def pooled_by_hand(f, level):
    h, w = f.shape[-2:]
    out = torch.empty(*f.shape[:2], level, level, dtype=f.dtype)
    for i, (r0, r1) in enumerate(windows(h, level)):
        for j, (c0, c1) in enumerate(windows(w, level)):
            out[:, :, i, j] = f[:, :, r0:r1, c0:c1].mean(dim=(2, 3))
    return out


def hcl_by_hand(pairs, levels=(4, 2, 1)):
    total = 0.0
    for fs, ft in pairs:
        loss, weight, tot = ((fs - ft) ** 2).mean(), 1.0, 1.0
        for level in levels:
            if level >= fs.shape[2]:
                continue
            weight /= 2
            loss = loss + weight * ((pooled_by_hand(fs, level) - pooled_by_hand(ft, level)) ** 2).mean()
            tot += weight
        total = total + loss / tot
    return total


def test_windows_of_seven_by_four_overlap():
    # docs/methods.md §2.4: the third window is [floor(14 / 4), ceil(21 / 4)) = [3, 6).
    assert windows(7, 4) == [(0, 2), (1, 4), (3, 6), (5, 7)]


@pytest.mark.parametrize(
    "shapes",
    [[(2, 3, 7, 7)], [(2, 3, 8, 8), (2, 5, 4, 4), (2, 6, 2, 2), (2, 6, 1, 1)], [(1, 2, 14, 9), (1, 3, 3, 5)]],
)
def test_reference_matches_formula(shapes):
    pairs = [(torch.randn(s, dtype=torch.float64), torch.randn(s, dtype=torch.float64)) for s in shapes]
    expected = hcl_by_hand(pairs)
    students, teachers = [p[0] for p in pairs], [p[1] for p in pairs]
    torch.testing.assert_close(reference.hcl_loss(students, teachers), expected)
    torch.testing.assert_close(F.hcl_loss(students, teachers, backend="reference"), expected)


def test_single_pair_and_custom_levels():
    fs, ft = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.randn(2, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(
        F.hcl_loss(fs, ft, levels=(3, 1), backend="reference"), hcl_by_hand([(fs, ft)], (3, 1))
    )


def test_teacher_gets_no_gradient():
    fs = torch.randn(2, 3, 8, 8, requires_grad=True)
    ft = torch.randn(2, 3, 8, 8, requires_grad=True)
    F.hcl_loss([fs], [ft], backend="reference").backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert ft.grad is None


def pair(shape=(2, 3, 8, 8)):
    return torch.randn(shape), torch.randn(shape)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize(
    "students,teachers,kwargs,message",
    [
        ([pair()[0]], [pair()[1], pair()[1]], {}, "student_feats has 1 levels but teacher_feats has 2"),
        ([], [], {}, "student_feats is empty"),
        (
            [pair()[0]],
            [torch.randn(3, 3, 8, 8)],
            {},
            r"teacher_feats\[0\] has batch size 3 but student_feats\[0\] has 2",
        ),
        ([pair()[0]], [torch.randn(2, 4, 8, 8)], {}, r"teacher_feats\[0\] has 4 channels"),
        ([pair()[0]], [torch.randn(2, 3, 8, 7)], {}, "spatial size"),
        (
            [pair()[0]],
            [pair()[1].double()],
            {},
            r"teacher_feats\[0\] must be torch.float32, got torch.float64",
        ),
        (
            [pair()[0], pair()[0].double()],
            [pair()[1]] * 2,
            {},
            r"student_feats\[1\] must be torch.float32, got torch.float64",
        ),
        ([torch.randn(2, 3, 8)], [torch.randn(2, 3, 8)], {}, r"student_feats\[0\] must be 4-D"),
        ([pair()[0]], [pair()[1]], {"levels": (4, 0)}, "levels must all be >= 1"),
        ([pair()[0]], [pair()[1]], {"levels": 4}, "levels must be a sequence of ints"),
        (pair()[0], [pair()[1]], {}, "both be tensors or both be sequences"),
    ],
)
def test_hcl_loss_rejects(backend, students, teachers, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.hcl_loss(students, teachers, backend=backend, **kwargs)
