"""Image-folder datasets and the clear errors for missing / unreadable data."""

import os

import numpy as np
import pytest
from PIL import Image

from tskd_fast.data import build_data
from tskd_fast.engine.config import load_config
from tskd_fast.errors import UserError


def _folder_tree(root, classes=("cat", "dog", "emu"), per_class=3, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            os.makedirs(root / split / name)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def _cfg(*overrides):
    return load_config(None, list(overrides))["dataset"]


def test_imagefolder_resizes_to_the_configured_size(tmp_path):
    _folder_tree(tmp_path)
    splits = build_data(
        _cfg("dataset.name=imagefolder", f"dataset.root={tmp_path}", "dataset.imagefolder.image_size=32")
    )
    assert splits.num_classes == 3 and len(splits.train) == 9 and len(splits.test) == 9
    x, y = splits.train[4]
    assert x.shape == (3, 32, 32) and y == 1
    assert splits.test[0][0].shape == (3, 32, 32)


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_data(_cfg("dataset.name=cinic10", f"dataset.root={tmp_path / 'nowhere'}"))


def test_mismatched_class_folders_are_reported(tmp_path):
    _folder_tree(tmp_path)
    os.makedirs(tmp_path / "val" / "yak")
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "val" / "yak" / "0.png")
    with pytest.raises(UserError, match="differ"):
        build_data(_cfg("dataset.name=imagefolder", f"dataset.root={tmp_path}"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_folder_is_a_user_error(tmp_path):
    _folder_tree(tmp_path)
    os.chmod(tmp_path / "train", 0)
    try:
        with pytest.raises(UserError, match="not readable"):
            build_data(_cfg("dataset.name=imagefolder", f"dataset.root={tmp_path}"))
    finally:
        os.chmod(tmp_path / "train", 0o755)


def test_cifar_absent_without_download_names_the_folder(tmp_path):
    with pytest.raises(UserError, match="cifar-100-python") as info:
        build_data(_cfg("dataset.name=cifar100", f"dataset.root={tmp_path}", "dataset.download=false"))
    assert "dataset.download is false" in str(info.value)


def test_tiny_imagenet_reads_the_shipped_val_layout(tmp_path):
    rng = np.random.default_rng(1)
    for wnid in ("n01", "n02"):
        os.makedirs(tmp_path / "train" / wnid / "images")
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            )
    os.makedirs(tmp_path / "val" / "images")
    lines = []
    for i, wnid in enumerate(("n02", "n01", "n02")):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / "val" / "images" / f"v{i}.JPEG"
        )
        lines.append(f"v{i}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (tmp_path / "val" / "val_annotations.txt").write_text("".join(lines))
    splits = build_data(_cfg("dataset.name=tiny_imagenet", f"dataset.root={tmp_path}"))
    assert splits.num_classes == 2 and len(splits.test) == 3
    assert [splits.test[i][1] for i in range(3)] == [1, 0, 1]
    assert splits.test[0][0].shape == (3, 64, 64)
