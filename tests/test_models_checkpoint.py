"""load_checkpoint: RepDistiller/mdistiller layouts, wrapper prefixes, and clear errors."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from tskd_fast.models import build_model, extract_state_dict, load_checkpoint


def _trained_like(name: str, num_classes: int = 100, seed: int = 0) -> torch.nn.Module:
    """A model whose weights and BN running statistics differ from a fresh one."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes).train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 100)))
    return model.eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(_x()), a.eval()(_x()), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "MobileNetV2", "ShuffleV2"])
def test_repdistiller_layout_with_ddp_prefix_round_trips(tmp_path, name):
    src = _trained_like(name)
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    path = tmp_path / "ckpt_epoch_3.pth"
    torch.save({"model": sd, "epoch": 3, "best_acc": 70.0}, path)

    dst = build_model(name, 100)
    with torch.no_grad():
        assert not torch.equal(dst.eval()(_x()), src(_x()))
    load_checkpoint(dst, path)
    _assert_same_outputs(src, dst)
    torch.testing.assert_close(dst.state_dict(), src.state_dict(), rtol=0, atol=0)


def test_state_dict_key_raw_and_compiled_layouts(tmp_path):
    src = _trained_like("resnet8")
    layouts = {
        "state_dict": {"state_dict": src.state_dict(), "optimizer": {"state": {}, "param_groups": []}},
        "raw": src.state_dict(),
        "compiled_ddp": {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()},
    }
    for label, obj in layouts.items():
        path = tmp_path / f"{label}.pth"
        torch.save(obj, path)
        dst = build_model("resnet8", 100)
        load_checkpoint(dst, str(path))
        _assert_same_outputs(src, dst)


def test_checkpoint_with_optimizer_namespace_and_numpy_values_loads(tmp_path):
    src = _trained_like("resnet8")
    opt = torch.optim.SGD(src.parameters(), lr=0.05, momentum=0.9)
    src.train()
    opt.zero_grad()
    src(_x()).sum().backward()
    opt.step()
    src.eval()
    path = tmp_path / "teacher.pth"
    torch.save(
        {
            "model": src.state_dict(),
            "optimizer": opt.state_dict(),
            "opt": argparse.Namespace(model="resnet8", learning_rate=0.05),
            "best_acc": np.float64(71.5),
            "history": np.arange(3, dtype=np.float32),
        },
        path,
    )
    dst = build_model("resnet8", 100)
    load_checkpoint(dst, path)
    _assert_same_outputs(src, dst)


def test_legacy_serialization_format_loads(tmp_path):
    src = _trained_like("resnet8")
    path = tmp_path / "legacy.pth"
    torch.save(
        {"model": src.state_dict(), "opt": argparse.Namespace(lr=0.1)},
        path,
        _use_new_zipfile_serialization=False,
    )
    dst = build_model("resnet8", 100)
    load_checkpoint(dst, path)
    _assert_same_outputs(src, dst)


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    src = _trained_like("resnet8")
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"model": sd}, path)
    dst = build_model("resnet8", 100)
    load_checkpoint(dst, path)
    _assert_same_outputs(src, dst)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(build_model("resnet8", 10), path)


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"", b"PK\x03\x04 truncated zip"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"could not read checkpoint .*broken\.pth.*corrupt"):
        load_checkpoint(build_model("resnet8", 10), path)


def test_truncated_checkpoint(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": build_model("resnet8", 10).state_dict()}, good)
    path = tmp_path / "cut.pth"
    path.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(build_model("resnet8", 10), path)


def test_pickled_module_is_refused_not_executed(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(build_model("resnet8", 10), path)
    with pytest.raises(ValueError, match=r"refusing to load checkpoint .*cannot be loaded safely"):
        load_checkpoint(build_model("resnet8", 10), path)


def test_wrong_number_of_classes(tmp_path):
    path = tmp_path / "cifar100.pth"
    torch.save({"model": build_model("resnet8", 100).state_dict(), "epoch": 240}, path)
    with pytest.raises(ValueError, match="checkpoint .* has 100 classes, the model has 10"):
        load_checkpoint(build_model("resnet8", 10), path)
    # Also through a Sequential classifier (MobileNetV2's classifier.0).
    torch.save({"model": build_model("MobileNetV2", 100).state_dict()}, path)
    with pytest.raises(ValueError, match="has 100 classes, the model has 10"):
        load_checkpoint(build_model("MobileNetV2", 10), path)


def test_wrong_architecture_names_keys(tmp_path):
    path = tmp_path / "resnet8.pth"
    torch.save({"model": build_model("resnet8", 100).state_dict()}, path)
    with pytest.raises(ValueError, match=r"missing keys \(layer1\.1\.conv1\.weight") as info:
        load_checkpoint(build_model("resnet20", 100), path)
    assert "different architecture" in str(info.value)
    with pytest.raises(ValueError, match=r"missing keys .*unexpected keys \(layer1\.0\.conv1\.weight"):
        load_checkpoint(build_model("wrn_16_1", 100), path)
    # Same key names, one tensor of a different width.
    sd = build_model("resnet8", 100).state_dict()
    sd["layer2.0.conv1.weight"] = torch.randn(24, 16, 3, 3)
    torch.save({"model": sd}, path)
    with pytest.raises(
        ValueError, match=r"shapes differ .*layer2\.0\.conv1\.weight: \(24, 16, 3, 3\) vs \(32, 16, 3, 3\)"
    ):
        load_checkpoint(build_model("resnet8", 100), path)


def test_no_recognisable_weights(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "best_acc": 70.0, "net": [1, 2]}, path)
    with pytest.raises(ValueError, match=r"no recognisable weights in .*meta\.pth.*'epoch'"):
        load_checkpoint(build_model("resnet8", 10), path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(ValueError, match="no recognisable weights"):
        load_checkpoint(build_model("resnet8", 10), path)


def test_non_strict_loading_warns_and_loads_the_rest(tmp_path):
    src = _trained_like("resnet8")
    sd = dict(src.state_dict())
    sd["projector.weight"] = torch.ones(3)
    path = tmp_path / "extra.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match=r"unexpected keys \(projector\.weight\)"):
        load_checkpoint(build_model("resnet8", 100), path)
    dst = build_model("resnet8", 100)
    with pytest.warns(UserWarning, match="projector.weight"):
        load_checkpoint(dst, path, strict=False)
    _assert_same_outputs(src, dst)


def test_extract_state_dict_strips_prefix_only_when_all_keys_have_it():
    t = torch.zeros(1)
    assert list(extract_state_dict({"model": {"module.a": t, "module.b": t}})) == ["a", "b"]
    assert list(extract_state_dict({"module.a": t, "b": t})) == ["module.a", "b"]
