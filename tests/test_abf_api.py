"""tskd_fast.reference.abf_fuse against the formula written out, and the argument checks of
tskd_fast.functional.abf_fuse."""

import pytest
import torch

from tskd_fast import functional as F
from tskd_fast import reference


def nearest_index(out_size: int, in_size: int) -> torch.Tensor:
    """PyTorch's nearest rule written out: src = floor(dst * in / out)."""
    return torch.tensor([(d * in_size) // out_size for d in range(out_size)])


def abf_by_formula(x, y, weight, bias):
    h, w = x.shape[-2:]
    y_up = y[:, :, nearest_index(h, y.shape[2])][:, :, :, nearest_index(w, y.shape[3])]
    both = torch.cat([x, y_up], dim=1)
    a = torch.einsum("kc,nchw->nkhw", weight.reshape(2, -1), both) + bias.view(1, 2, 1, 1)
    z = 1.0 / (1.0 + torch.exp(-a))
    return x * z[:, :1] + y_up * z[:, 1:]


@pytest.mark.parametrize(
    "size,residual", [((7, 7), (1, 1)), ((7, 5), (3, 2)), ((14, 14), (7, 7)), ((8, 8), (8, 8))]
)
def test_reference_matches_formula(size, residual):
    m = 5
    x = torch.randn(3, m, *size, dtype=torch.float64)
    y = torch.randn(3, m, *residual, dtype=torch.float64)
    weight = torch.randn(2, 2 * m, 1, 1, dtype=torch.float64)
    bias = torch.randn(2, dtype=torch.float64)
    torch.testing.assert_close(reference.abf_fuse(x, y, weight, bias), abf_by_formula(x, y, weight, bias))
    torch.testing.assert_close(
        F.abf_fuse(x, y, weight.view(2, -1), bias, backend="reference"), abf_by_formula(x, y, weight, bias)
    )


def good(m=4):
    return torch.randn(2, m, 6, 6), torch.randn(2, m, 3, 3), torch.randn(2, 2 * m, 1, 1), torch.randn(2)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize(
    "index,value,message",
    [
        (1, torch.randn(2, 3, 3, 3), "y .* has 3 channels but x has 4"),
        (1, torch.randn(3, 4, 3, 3), "y .* has batch size 3 but x has 2"),
        (1, torch.randn(2, 4, 7, 3), "cannot be fused"),
        (1, torch.randn(2, 4, 3, 3).double(), "y must be torch.float32, got torch.float64"),
        (1, torch.randn(2, 4, 3), "y must be 4-D"),
        (0, torch.randn(2, 4, 6, 6).long(), "x must be float32, float16, bfloat16 or float64"),
        (0, torch.randn(2, 4, 0, 6), "x is empty"),
        (2, torch.randn(2, 7, 1, 1), r"att_weight must have shape \(2, 2M, 1, 1\)"),
        (3, torch.randn(3), r"att_bias must have shape \(2,\)"),
        (3, torch.tensor([1, 2]), "att_bias must be a floating-point"),
    ],
)
def test_abf_fuse_rejects(backend, index, value, message):
    args = list(good())
    args[index] = value
    with pytest.raises(ValueError, match=message):
        F.abf_fuse(*args, backend=backend)


def test_abf_fuse_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        F.abf_fuse(*good(), backend="gpu")
