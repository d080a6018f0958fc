"""The embedded shapes dataset: deterministic generation and the per-batch CIFAR augmentation."""

import numpy as np
import pytest
import torch

from tskd_fast.data import build_data
from tskd_fast.data.embedded import ShapesSpec, class_names, generate
from tskd_fast.data.tensor_dataset import AugmentedTensorDataset
from tskd_fast.engine.config import load_config

SMALL = ShapesSpec(train_size=300, test_size=100, seed=3)


def test_generation_is_deterministic_and_seeded():
    a_img, a_lab = generate(SMALL, "train")
    b_img, b_lab = generate(SMALL, "train")
    assert a_img.shape == (300, 32, 32, 3) and a_img.dtype == np.uint8
    assert a_lab.shape == (300,) and a_lab.dtype == np.int64
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = generate(ShapesSpec(train_size=300, test_size=100, seed=4), "train")
    assert not np.array_equal(a_img, c_img)
    t_img, _ = generate(SMALL, "test")
    assert t_img.shape[0] == 100 and not np.array_equal(t_img[:50], a_img[:50])


def test_images_are_varied_and_labels_cover_the_classes():
    images, labels = generate(SMALL, "train")
    assert set(labels.tolist()) == set(range(SMALL.num_classes))
    assert images.std() > 20  # real content, not a flat field
    assert len(class_names(SMALL)) == SMALL.num_classes == 20


def test_label_noise_only_touches_the_training_split():
    noisy = ShapesSpec(train_size=400, test_size=100, seed=3, label_noise=0.5)
    _, clean_train = generate(ShapesSpec(train_size=400, test_size=100, seed=3), "train")
    _, noisy_train = generate(noisy, "train")
    assert 0.2 < np.mean(clean_train != noisy_train) < 0.6
    clean_test = generate(ShapesSpec(train_size=400, test_size=100, seed=3), "test")[1]
    np.testing.assert_array_equal(generate(noisy, "test")[1], clean_test)


@pytest.mark.parametrize(
    "bad", [{"num_shapes": 0}, {"num_textures": 9}, {"label_noise": 1.0}, {"train_size": 0}]
)
def test_invalid_specs_are_rejected(bad):
    with pytest.raises(ValueError):
        ShapesSpec(**bad)


def test_batch_augmentation_is_a_padded_crop_and_flip():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(16)
    ds = AugmentedTensorDataset(images, labels, mean=(0, 0, 0), std=(1 / 255,) * 3, augment=True, pad=2)
    items = ds.__getitems__(list(range(16)))
    for i, (x, y) in enumerate(items):
        assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and int(y) == i
        padded = torch.nn.functional.pad(images[i].float(), (2, 2, 2, 2))
        candidates = [
            view
            for top in range(5)
            for left in range(5)
            for view in (padded[:, top : top + 8, left : left + 8],)
            for view in (view, view.flip(-1))
        ]
        assert any(torch.equal(x, c) for c in candidates)
    plain = AugmentedTensorDataset(images, labels, mean=(0.5,) * 3, std=(0.25,) * 3, augment=False)
    x, _ = plain[3]
    torch.testing.assert_close(x, (images[3].float() / 255 - 0.5) / 0.25)


def test_build_data_applies_subsets():
    cfg = load_config(
        None, ["dataset.shapes.train_size=200", "dataset.shapes.test_size=80", "dataset.train_subset=64"]
    )
    splits = build_data(cfg["dataset"])
    assert len(splits.train) == 64 and len(splits.test) == 80 and splits.num_classes == 20
    x, y = splits.train[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) < 20
