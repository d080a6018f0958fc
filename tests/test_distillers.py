"""Distillers: the registry, the mdistiller contract, a frozen teacher, and terms combined by config."""

import pytest
import torch

from tskd_fast import functional as F
from tskd_fast.distillers import Distiller, get_method, methods
from tskd_fast.engine.build import build_distiller
from tskd_fast.engine.config import load_config
from tskd_fast.models import build_model


def _pair(classes=20):
    torch.manual_seed(0)
    return build_model("resnet8", classes), build_model("resnet8", classes)


def _batch(classes=20, n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, classes, (n,), generator=g)


def _distiller(*overrides):
    cfg = load_config(None, ["teacher.name=resnet8", *overrides])
    student, teacher = _pair()
    uses_teacher = cfg["distiller"]["name"] != "vanilla"
    return build_distiller(cfg, student, teacher if uses_teacher else None), cfg


def test_registry_has_the_builtin_methods():
    assert {"vanilla", "kd", "dtd_ka"} <= set(methods())
    assert get_method("kd").terms == {"ce": 0.1, "kd": 0.9}
    with pytest.raises(ValueError, match="valid methods"):
        get_method("nope")


def test_teacher_is_frozen_and_stays_in_eval_mode():
    d, _ = _distiller()
    d.train()
    assert d.student.training and not d.teacher.training
    assert not any(p.requires_grad for p in d.teacher.parameters())
    groups = d.param_groups()
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in d.student.parameters()}
    assert set(d.trainable_modules()) == {"student"}


def test_forward_train_contract_and_kd_value():
    d, cfg = _distiller("distiller.kd.temperature=2")
    d.train()
    x, y = _batch()
    logits, losses = d.forward_train(x, y)
    assert logits.shape == (8, 20) and set(losses) == {"ce", "kd"}
    with torch.no_grad():
        t_logits = d.teacher(x)
    expected_kd = 0.9 * F.kd_loss(logits, t_logits, temperature=2.0, backend="reference")
    expected_ce = 0.1 * torch.nn.functional.cross_entropy(logits, y)
    torch.testing.assert_close(losses["kd"], expected_kd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["ce"], expected_ce)
    sum(losses.values()).backward()
    assert d.student.conv1.weight.grad is not None
    assert all(p.grad is None for p in d.teacher.parameters())
    d.eval()
    assert d(x).shape == (8, 20)


def test_dtd_ka_method_uses_dynamic_temperatures():
    d, _ = _distiller("distiller.name=dtd_ka")
    d.train()
    x, y = _batch()
    logits, losses = d.forward_train(x, y)
    assert set(losses) == {"ce", "dtd_ka"}
    with torch.no_grad():
        t_logits = d.teacher(x)
    tau = F.dtd_temperature(logits.detach(), t_logits, target=y, ka="ps")
    expected = 0.9 * F.kd_loss(logits, t_logits, y, temperature=tau, ka="ps", backend="reference")
    torch.testing.assert_close(losses["dtd_ka"], expected, rtol=1e-5, atol=1e-6)
    assert "dtd_ka_temperature" in d.log_values()


def test_terms_combine_by_config_and_zero_weights_are_off():
    d, _ = _distiller("distiller.terms.dtd_ka=0.5", "distiller.terms.ce=0")
    assert set(d.terms) == {"kd", "dtd_ka"}
    d.train()
    _, losses = d.forward_train(*_batch())
    assert set(losses) == {"kd", "dtd_ka"} and all(torch.isfinite(v) for v in losses.values())


def test_vanilla_needs_no_teacher_and_schedules_scale_terms():
    d, _ = _distiller("distiller.name=vanilla", "distiller.terms.kd=0", "teacher.train=false")
    assert d.teacher is None and set(d.terms) == {"ce"}
    d.train()
    x, y = _batch()
    _, losses = d.forward_train(x, y)
    d.term_factors["ce"] = 0.25
    _, scaled = d.forward_train(x, y)
    torch.testing.assert_close(scaled["ce"], 0.25 * losses["ce"])


def test_teacher_terms_without_a_teacher_are_rejected():
    student, _ = _pair()
    from tskd_fast.distillers.terms import KDTerm

    with pytest.raises(ValueError, match="need a teacher"):
        Distiller(student, None, {"kd": (1.0, KDTerm(4.0, "none", 0.9, "tau2"))})


def test_checkpoint_state_round_trip():
    d, _ = _distiller()
    state = d.checkpoint_state()
    assert set(state["modules"]) == {"student"}
    other, _ = _distiller()
    with torch.no_grad():
        for p in other.student.parameters():
            p.add_(1.0)
    other.load_checkpoint_state(state)
    for a, b in zip(d.student.state_dict().values(), other.student.state_dict().values()):
        assert torch.equal(a, b)
