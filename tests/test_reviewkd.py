"""The ``reviewkd`` method: its loss is CE + lambda * warmup * HCL of the ABF-fused student features
against the teacher's pre-ReLU ones, it combines with other terms, trains its ABFs in their own
parameter group, and every packaged config builds and runs for its pair."""

import glob
import os

import pytest
import torch
import torch.nn.functional as TF

from tests.test_review_modules import OfficialStack
from tskd_fast import reference
from tskd_fast.distillers.reviewkd import ReviewKDDistiller, warmup_factor
from tskd_fast.engine.build import build_distiller
from tskd_fast.engine.config import load_config
from tskd_fast.models import build_model
from tskd_fast.nn import KDLoss
from tskd_fast.nn.review import preset

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tskd_fast", "configs")


def _distiller(*overrides, student="resnet8", teacher="resnet8"):
    cfg = load_config(
        None, ["distiller.name=reviewkd", f"teacher.name={teacher}", f"student.name={student}", *overrides]
    )
    d = build_distiller(cfg, build_model(student, 10), build_model(teacher, 10))
    d.train()
    return d


def test_warmup_factor_schedule():
    assert [warmup_factor(e, 20) for e in (0, 1, 10, 19, 20, 21, 239)] == [
        0.0,
        0.05,
        0.5,
        0.95,
        1.0,
        1.0,
        1.0,
    ]
    assert warmup_factor(0, 0) == 1.0
    d = _distiller("distiller.reviewkd.warmup_epochs=4")
    factors = []
    for epoch in range(6):
        d.on_epoch_start(epoch, 6)
        factors.append(d.term_factors["hcl"])
    assert factors == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert d.term_factors["ce"] == 1.0


def test_loss_is_ce_plus_weighted_hcl_of_the_fused_features():
    d = _distiller("distiller.terms.hcl=2.5", "distiller.reviewkd.warmup_epochs=4")
    assert isinstance(d, ReviewKDDistiller)
    d.on_epoch_start(2, 10)  # factor 0.5
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    logits, losses = d.forward_train(x, y, epoch=2)
    assert set(losses) == {"ce", "hcl"}

    # The same step written out with the official review loop over the same ABF weights.
    official = OfficialStack([16, 32, 64, 64], [16, 32, 64, 64], [1, 8, 16, 32])
    official.load_state_dict(d.fusion.state_dict())
    s_logits, s = d.student(x, with_features=True)
    with torch.no_grad():
        _, t = d.teacher(x, with_features=True)
    s_levels = [*s["feats"][1:], s["pooled_feat"][:, :, None, None]]  # post-ReLU student
    t_levels = [*t["preact_feats"][1:], t["pooled_feat"][:, :, None, None]]  # pre-ReLU teacher
    assert min(f.min() for f in s_levels) >= 0 and min(f.min() for f in t_levels) < 0
    expected = 2.5 * 0.5 * reference.hcl_loss(official(s_levels), t_levels)
    torch.testing.assert_close(losses["hcl"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["ce"], TF.cross_entropy(s_logits, y))
    torch.testing.assert_close(logits, s_logits)

    sum(losses.values()).backward()
    assert all(p.grad is None for p in d.teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.fusion.parameters())


def test_combines_with_the_kd_term():
    d = _distiller("distiller.terms.kd=0.9", "distiller.kd.temperature=3")
    d.on_epoch_start(30, 40)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    logits, losses = d.forward_train(x, y, epoch=30)
    assert set(losses) == {"ce", "hcl", "kd"}
    with torch.no_grad():
        t_logits = d.teacher(x)
    torch.testing.assert_close(losses["kd"], 0.9 * KDLoss(T=3.0)(logits, t_logits))
    assert losses["hcl"] > 0


def test_abfs_have_their_own_param_group_and_are_checkpointed_and_wrapped():
    d = _distiller("distiller.reviewkd.lr_scale=0.5")
    groups = d.param_groups()
    assert len(groups) == 2 and groups[1]["lr_scale"] == 0.5
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in d.fusion.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in d.student.parameters()}
    state = d.checkpoint_state()
    assert set(state["modules"]) == {"student", "fusion"}
    assert any(k.startswith("abfs.3.att_conv.0.") for k in state["modules"]["fusion"])

    class Wrapped(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    d.wrap_trainable(Wrapped)
    assert isinstance(d.fusion, Wrapped) and isinstance(d.student, Wrapped)


def test_hcl_term_without_the_reviewkd_method_is_refused():
    cfg = load_config(None, ["distiller.name=kd", "teacher.name=resnet8", "distiller.terms.hcl=1"])
    d = build_distiller(cfg, build_model("resnet8", 10), build_model("resnet8", 10))
    d.train()
    with pytest.raises(ValueError, match="distiller.name=reviewkd"):
        d.forward_train(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))


CONFIG_FILES = sorted(glob.glob(os.path.join(CONFIGS, "*", "reviewkd", "*.yaml")))


def test_there_is_a_reviewkd_config_per_kd_pair():
    kd = {os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "cifar100", "kd", "*.yaml"))}
    ours = {os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "cifar100", "reviewkd", "*.yaml"))}
    assert kd == ours
    assert os.path.exists(os.path.join(CONFIGS, "imagenet", "reviewkd", "r34_r18.yaml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: "/".join(p.split(os.sep)[-3:]))
def test_config_builds_its_pair_and_matches_the_preset(path):
    """One tiny forward of each config's pair (CIFAR 32x32, ImageNet 224x224, batch 2)."""
    cfg = load_config(path)
    t_name, s_name = cfg["teacher"]["name"], cfg["student"]["name"]
    p = preset(t_name, s_name)
    assert cfg["distiller"]["terms"]["hcl"] == (p.hcl_weight if p.hcl_weight is not None else 5.0)
    assert cfg["distiller"]["reviewkd"]["student_preact"] == p.student_preact
    classes = 1000 if "imagenet" in path else 100
    torch.manual_seed(0)
    d = build_distiller(cfg, build_model(s_name, classes), build_model(t_name, classes))
    d.train()
    d.on_epoch_start(cfg["solver"]["epochs"] - 1, cfg["solver"]["epochs"])
    assert (d.fusion.in_channels, d.fusion.out_channels) == (list(p.in_channels), list(p.out_channels))
    assert d.fusion.mid_channel == p.mid_channel

    x, y = torch.randn(2, 3, p.input_size, p.input_size), torch.randint(0, classes, (2,))
    seen = {}
    original = d.fusion.forward

    def spy(features, out_shapes=None):
        seen["student"] = [f.shape[-1] for f in reversed(features)]
        seen["out"] = [s[-1] for s in out_shapes]
        return original(features, out_shapes)

    d.fusion.forward = spy
    with torch.no_grad():  # forward only: the gradients are checked on small layouts elsewhere
        _, losses = d.forward_train(x, y, epoch=cfg["solver"]["epochs"] - 1)
    # The preset's sizes (official shapes / out_shapes) are what the real models produce.
    assert seen["student"] == list(p.shapes) and seen["out"] == list(p.out_shapes)
    assert torch.isfinite(losses["hcl"]) and losses["hcl"] > 0
