"""Plain-PyTorch stand-ins of the fused ops that other branches add (convlstm_gates, abf_fuse,
hcl_loss), written from their agreed API, so the bench's case files can be exercised before those
ops are merged. `use_real_or_standins` installs a stand-in only where the real op is missing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_f

from tskd_fast import functional, reference


def convlstm_gates(gates, c_prev, w_ci=None, w_cf=None, w_co=None, backend="auto"):
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=1)
    if w_ci is not None:
        a_i = a_i + w_ci * c_prev
    if w_cf is not None:
        a_f = a_f + w_cf * c_prev
    c = torch.sigmoid(a_f) * c_prev + torch.sigmoid(a_i) * torch.tanh(a_g)
    if w_co is not None:
        a_o = a_o + w_co * c
    return torch.sigmoid(a_o) * torch.tanh(c), c


def abf_fuse(x, y, att_weight, att_bias, backend="auto"):
    y_up = torch_f.interpolate(y, size=x.shape[-2:], mode="nearest")
    z = torch.sigmoid(torch_f.conv2d(torch.cat([x, y_up], dim=1), att_weight, att_bias))
    return x * z[:, :1] + y_up * z[:, 1:]


def hcl_loss(student_feats, teacher_feats, levels=(4, 2, 1), backend="auto"):
    total = 0.0
    for fs, ft in zip(student_feats, teacher_feats):
        ft = ft.detach()
        loss, weight, tot = torch_f.mse_loss(fs, ft), 1.0, 1.0
        for level in levels:
            if level >= fs.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * torch_f.mse_loss(
                torch_f.adaptive_avg_pool2d(fs, level), torch_f.adaptive_avg_pool2d(ft, level)
            )
            tot += weight
        total = total + loss / tot
    return total


def _strip_backend(fn):
    def ref(*args, **kwargs):
        kwargs.pop("backend", None)
        return fn(*args, **kwargs)

    return ref


STANDINS = {"convlstm_gates": convlstm_gates, "abf_fuse": abf_fuse, "hcl_loss": hcl_loss}


def install_missing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Put a stand-in wherever tskd_fast.functional / tskd_fast.reference lacks the op; returns
    the names that were stood in (empty once every op is merged)."""
    stood_in = []
    for name, fn in STANDINS.items():
        if not hasattr(functional, name):
            monkeypatch.setattr(functional, name, fn, raising=False)
            stood_in.append(name)
        if not hasattr(reference, name):
            monkeypatch.setattr(reference, name, _strip_backend(fn), raising=False)
    return stood_in
