"""Each method's reference flavour against its official code, written out here: TSKD's per-column
attention maps and review loss, ReviewKD's warm-up, TST's apply probabilities, magnitude signs and
loss weights, TSKD's memory/review points, a teacher with train-mode BatchNorm, the CIFAR
normalisations; and the package's own defaults one key away from them."""

import copy
import glob
import inspect
import os
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tskd_fast.data import build_data
from tskd_fast.data.transforms import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN
from tskd_fast.distillers import RunInfo, build_method, build_term, get_method
from tskd_fast.distillers.tskd import ReviewSchedule
from tskd_fast.engine.build import build_distiller
from tskd_fast.engine.config import load_config, schema_defaults
from tskd_fast.engine.normalisation import normalisation_of
from tskd_fast.errors import ConfigError
from tskd_fast.models import build_model
from tskd_fast.nn import DTDKDLoss
from tskd_fast.nn.augment import LearnedAugmentation
from tskd_fast.nn.tskd import TSKDReview

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "tskd_fast", "configs", "cifar100")


# -- TSKD: the official review module structure and formula -----------------------------------------
class OfficialConvLSTM(nn.Module):
    """The TSKD reference's ConvLSTM: one conv over [x, h] -> i, f, g, o; its peepholes are never
    registered, so they stay zero and are left out here."""

    def __init__(self, in_channels, hidden, size):
        super().__init__()
        self._conv = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, 1, 1)
        self.in_channels, self.hidden, self.size = in_channels, hidden, size

    def forward(self, inputs, states, seq_len):
        if states is None:
            b = inputs.shape[1]
            h = torch.zeros(b, self.hidden, self.size, self.size)
            c = torch.zeros(b, self.hidden, self.size, self.size)
        else:
            h, c = states
        outputs = []
        for t in range(seq_len):
            x = (
                torch.zeros(h.shape[0], self.in_channels, self.size, self.size)
                if inputs is None
                else inputs[t]
            )
            i, f, g, o = torch.chunk(self._conv(torch.cat([x, h], 1)), 4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


def _layers(spec):
    """The reference's make_layers naming: a conv or deconv per entry, '<name>' then 'leaky_<name>'."""
    layers = []
    for name, (cin, cout, k, s, p) in spec.items():
        cls = nn.ConvTranspose2d if "deconv" in name else nn.Conv2d
        layers.append((name, cls(cin, cout, k, s, p)))
        if "leaky" in name:
            layers.append(("leaky_" + name, nn.LeakyReLU(0.2)))
    return nn.Sequential(OrderedDict(layers))


class OfficialEncoder(nn.Module):
    def __init__(self, hidden, size):
        super().__init__()
        self.stage1 = _layers({"conv1_leaky_1": [1, 8, 3, 2, 1]})
        self.rnn1 = OfficialConvLSTM(8, hidden, size)

    def forward(self, seq):
        t, b, c, h, w = seq.shape
        x = self.stage1(seq.reshape(-1, c, h, w))
        x = x.reshape(t, b, *x.shape[1:])
        _, state = self.rnn1(x, None, t)
        return (state,)


class OfficialForecaster(nn.Module):
    def __init__(self, hidden, size):
        super().__init__()
        self.rnn1 = OfficialConvLSTM(hidden, hidden, size)
        self.stage1 = _layers(
            {
                "deconv3_leaky_1": [hidden, 8, 4, 2, 1],
                "conv3_leaky_2": [8, 8, 3, 1, 1],
                "conv3_3": [8, 1, 1, 1, 0],
            }
        )

    def forward(self, states):
        out, _ = self.rnn1(None, states[-1], 1)
        s, b = out.shape[:2]
        y = self.stage1(out.reshape(-1, *out.shape[2:]))
        return y.reshape(s, b, *y.shape[1:])


class OfficialEF(nn.Module):
    def __init__(self, hidden, size):
        super().__init__()
        self.encoder = OfficialEncoder(hidden, size)
        self.forecaster = OfficialForecaster(hidden, size)

    def forward(self, seq):
        return self.forecaster(self.encoder(seq))


# Our review head's keys -> the reference's EF keys (one branch).
EF_KEYS = {
    "encoder_conv": "encoder.stage1.conv1_leaky_1",
    "encoder.cell_list.0.conv": "encoder.rnn1._conv",
    "forecaster.cell_list.0.conv": "forecaster.rnn1._conv",
    "decoder_deconv": "forecaster.stage1.deconv3_leaky_1",
    "decoder_conv": "forecaster.stage1.conv3_leaky_2",
    "decoder_out": "forecaster.stage1.conv3_3",
}


def official_ef_state(review: TSKDReview, branch: int) -> dict:
    out = {}
    for key, value in review.branches[branch].state_dict().items():
        module, leaf = key.rsplit(".", 1)
        out[f"{EF_KEYS[module]}.{leaf}"] = value
    return out


def official_at(x):
    # The reference's attention map: F.normalize on the (B, H, W) energy normalises dim 1, i.e. H.
    return F.normalize(x.pow(2).mean(1)).view(x.size(0), 1, x.size(2), x.size(3))


def official_review_loss(efs, snapshots, student, teacher):
    """The reference's review step on the same features: snapshots (time order) and the current
    student give each branch |A1-A2|, |A2-A3|, |Acur-A3|; each EF predicts the student-teacher gap."""
    previous = [[official_at(f) for f in snap] for snap in snapshots]
    current = [official_at(f) for f in student]
    loss = 0.0
    for j, ef in enumerate(efs):
        seq = [(previous[i][j] - previous[i + 1][j]).abs() for i in range(len(previous) - 1)]
        seq.append((current[j] - previous[-1][j]).abs())
        t = teacher[j]
        if t.shape[2] != student[j].shape[2]:
            t = F.adaptive_avg_pool2d(t, student[j].shape[2:])
        target = (official_at(student[j]) - official_at(t)).abs()
        loss = loss + F.mse_loss(ef(torch.stack(seq)).reshape(target.shape), target)
    return loss


def test_tskd_review_loss_with_height_norm_equals_the_official_formula():
    torch.manual_seed(0)
    sizes, widths, b = [(8, 8), (8, 8), (4, 4)], [8, 8, 4], 3
    review = TSKDReview(sizes, hidden_channels=widths, attention_norm="height", backend="cpu")
    efs = []
    for j, (size, width) in enumerate(zip(sizes, widths)):
        ef = OfficialEF(width, (size[0] + 1) // 2)
        ef.load_state_dict(official_ef_state(review, j))  # strict: every official key is covered
        efs.append(ef)

    def feats(channels):
        return [torch.randn(b, c, *s) for c, s in zip(channels, sizes)]

    snapshots = [feats([4, 6, 5]) for _ in range(3)]
    student = feats([4, 6, 5])
    teacher = [
        torch.randn(b, 7, 8, 8),
        torch.randn(b, 3, 8, 8),
        torch.randn(b, 9, 8, 8),
    ]  # the last is pooled
    ours = review([review.maps(s) for s in snapshots], student, teacher)
    expected = official_review_loss(efs, snapshots, student, teacher)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)

    # The package's default normalises the whole map instead: each map is then about W times
    # smaller, so the loss is not the official one.
    flat = TSKDReview(sizes, hidden_channels=widths, backend="cpu")
    flat.load_state_dict(review.state_dict())
    assert not torch.allclose(flat([flat.maps(s) for s in snapshots], student, teacher), expected)


def test_tskd_configs_use_the_reference_flavour():
    for path in sorted(glob.glob(os.path.join(CONFIGS, "tskd", "*.yaml"))):
        cfg = load_config(path)
        assert cfg["distiller"]["tskd"]["attention_norm"] == "height", path
        assert cfg["teacher"]["bn_mode"] == "train" and cfg["dataset"]["normalize"] == "cifar10", path
        assert cfg["distiller"]["terms"] == {**cfg["distiller"]["terms"], "ce": 1.0, "kd": 1.0}, path
        student = cfg["student"]["name"]
        small = student in ("ShuffleV1", "ShuffleV2", "MobileNetV2")
        solver = cfg["solver"]
        assert (solver["batch_size"], solver["nesterov"], solver["weight_decay"]) == (128, True, 5e-4), path
        assert solver["lr"] == (0.02 if small else 0.1), path
        # train.py decays the lr after finishing epochs 150/180/210: from epoch 151 on (0-based).
        assert solver["milestones"] == [151, 181, 211], path


def test_tskd_points_match_the_official_schedule_as_fraction_or_epochs():
    points = [e for e in range(240) if e % 5 == 0]  # the reference's memory/review points
    official = {e: ("memory", 0) for e in points[0::4]}
    official.update({e: ("memory", 1) for e in points[1::4]})
    official.update({e: ("memory", 2) for e in points[2::4]})
    official.update({e: ("review", -1) for e in points[3::4]})
    for schedule in (ReviewSchedule(5 / 240), ReviewSchedule(0.0208333333), ReviewSchedule(0.5, absolute=5)):
        got = {e: schedule.phase(e, 240) for e in range(240)}
        assert got == {e: official.get(e, ("general", -1)) for e in range(240)}
    # A short run keeps the proportions as a fraction, the reference's spacing in epochs.
    assert ReviewSchedule(5 / 240).review_epochs(8) == [3, 7]
    assert ReviewSchedule(5 / 240, absolute=5).review_epochs(60) == [15, 35, 55]


# -- ReviewKD: the warm-up ---------------------------------------------------------------------------
def _reviewkd(*overrides):
    cfg = load_config(
        None, ["distiller.name=reviewkd", "teacher.name=resnet8", "teacher.train=true", *overrides]
    )
    return build_distiller(cfg, build_model("resnet8", 10), build_model("resnet8", 10))


def _factors(distiller, epochs):
    out = []
    for epoch in range(epochs):
        distiller.on_epoch_start(epoch, epochs)
        out.append(distiller.term_factors["hcl"])
    return out


def test_reviewkd_warmup_is_the_official_one_as_a_fraction_of_the_run():
    official = [min(1, epoch / 20.0) for epoch in range(240)]  # train.py: min(1, epoch/args.kd_warm_up)
    assert _factors(_reviewkd(), 240) == pytest.approx(official, rel=1e-12, abs=0)
    assert _factors(_reviewkd("distiller.reviewkd.warmup_epochs=20"), 240) == official
    # A short run warms up over the same share of its length (20/240 of 8 epochs: 2/3 of one), or
    # over the official 20 epochs when they are given in epochs.
    assert _factors(_reviewkd(), 8) == pytest.approx([0.0] + [1.0] * 7)
    assert _factors(_reviewkd("distiller.reviewkd.warmup_epochs=20"), 8) == [e / 20 for e in range(8)]
    assert _factors(_reviewkd("distiller.reviewkd.warmup=0"), 8) == [1.0] * 8
    with pytest.raises(ConfigError, match="distiller.reviewkd.warmup "):
        _reviewkd("distiller.reviewkd.warmup=2")


def test_reviewkd_configs_use_the_reference_flavour():
    for path in sorted(glob.glob(os.path.join(CONFIGS, "reviewkd", "*.yaml"))):
        cfg = load_config(path)
        assert cfg["teacher"]["bn_mode"] == "train" and cfg["dataset"]["normalize"] == "cifar10", path
        assert cfg["distiller"]["reviewkd"]["warmup"] * 240 == pytest.approx(20), path
        assert (cfg["solver"]["batch_size"], cfg["solver"]["nesterov"]) == (128, True), path
        assert cfg["solver"]["milestones"] == [151, 181, 211], path


# -- TST: apply probabilities, magnitude signs, loss weights -----------------------------------------
def _p_of_invert(aug, x_pixel, generator):
    """The applied weight p of the single op 'invert' on a constant image (mean 0, std 1)."""
    x = torch.full((1, 3, 4, 4), x_pixel)
    out = aug(x, generator=generator)
    return ((out - x) / (1.0 - 2.0 * x)).mean().item()


def test_tst_sigmoid_apply_logit_is_the_official_relaxed_bernoulli():
    for apply_logit in ("sigmoid", "learned"):
        aug = LearnedAugmentation(
            ops=["invert"], num_ops=1, mean=(0.0,) * 3, std=(1.0,) * 3, apply_logit=apply_logit, seed=0
        )
        for theta in (-3.0, -0.5, 0.0, 2.0):
            aug.probability_logits.data.fill_(theta)
            for seed in range(4):
                u = aug.draw(torch.Generator().manual_seed(seed)).uniform[0]
                noise = torch.log(u) - torch.log1p(-u)
                logit = (
                    torch.sigmoid(torch.tensor(theta)) if apply_logit == "sigmoid" else torch.tensor(theta)
                )
                # The reference: RelaxedBernoulli(temperature 0.05, probs passed as logits) ->
                # sigmoid((logistic noise + sigmoid(theta)) / 0.05).
                expected = torch.sigmoid((noise + logit) / 0.05).item()
                got = _p_of_invert(aug, 0.2, torch.Generator().manual_seed(seed))
                assert got == pytest.approx(expected, abs=1e-5), (apply_logit, theta, seed)
            rate = aug.probabilities.item()
            assert rate == pytest.approx(torch.sigmoid(logit).item())
        if apply_logit == "sigmoid":
            # The reference's apply rate cannot leave (0.5, 0.73): no op is ever switched off.
            aug.probability_logits.data.copy_(torch.tensor([-30.0]))
            assert 0.5 <= aug.probabilities.item() < 0.5 + 1e-6
            aug.probability_logits.data.copy_(torch.tensor([30.0]))
            assert aug.probabilities.item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())


def test_tst_magnitudes_are_positive_without_signs_and_signed_by_default():
    x = torch.full((1, 3, 6, 6), 0.4)
    for signed in (False, True):
        aug = LearnedAugmentation(
            ops=["brightness"], num_ops=1, mean=(0.0,) * 3, std=(1.0,) * 3, signed=signed, seed=1
        )
        changes = [(aug(x) - x).mean().item() for _ in range(24)]
        if signed:
            assert min(changes) < 0 < max(changes)
        else:  # factor 1 + 0.9 m > 1 every time: never darker
            assert min(changes) >= 0 and max(changes) > 0


class _Net(nn.Module):
    """A small model without BatchNorm, so logits do not depend on the batch they share."""

    def __init__(self, classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x, with_features=False):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def official_tst_kd(student_logits, teacher_logits, target, temperature=4.0, alpha=1.0):
    """The reference's KDLoss over the concatenated [augmented, original] batch: the hard-label
    KL against the one-hot target plus T^2 * alpha * KL of the softened distributions, batchmean."""
    onehot = F.one_hot(target, student_logits.shape[1]).float()
    soft = F.kl_div(
        torch.log_softmax(student_logits / temperature, 1),
        torch.softmax(teacher_logits / temperature, 1),
        reduction="batchmean",
    )
    hard = F.kl_div(torch.log_softmax(student_logits, -1), onehot, reduction="batchmean")
    return hard + temperature**2 * soft * alpha


@pytest.mark.parametrize("kd_weight", [1.0, 0.5])
def test_tst_loss_with_the_reference_weights_is_the_official_one(kd_weight):
    defaults = schema_defaults("shapes", "tst")["distiller"]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    terms = {
        "ce": (1.0, build_term("ce", defaults["ce"])),
        "kd": (kd_weight, build_term("kd", defaults["kd"])),
    }
    options = {"apply_logit": "sigmoid", "signed_magnitudes": False, "mean": list(mean), "std": list(std)}
    d = build_method("tst", _Net(), _Net(), terms, options)
    d.bind_run(RunInfo(device=torch.device("cpu"), amp_dtype=None, run_dir=None))
    d.train()
    image, target = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    state = d.augment.generator.get_state()
    _, losses = d.forward_train(image, target)
    d.augment.generator.set_state(state)
    with torch.no_grad():
        augmented = d.augment(image)
        both = torch.cat([augmented, image])
        expected = official_tst_kd(
            d.student(both), d.teacher(both), torch.cat([target, target]), alpha=kd_weight
        )
    torch.testing.assert_close(sum(losses.values()).detach(), expected, rtol=1e-5, atol=1e-6)


def test_tst_configs_use_the_reference_flavour():
    for path in sorted(glob.glob(os.path.join(CONFIGS, "tst", "*.yaml"))):
        cfg = load_config(path)
        tst, solver = cfg["distiller"]["tst"], cfg["solver"]
        assert (tst["apply_logit"], tst["signed_magnitudes"]) == ("sigmoid", False), path
        assert cfg["distiller"]["terms"]["ce"] == 1.0 and cfg["distiller"]["terms"]["kd"] in (0.5, 1.0), path
        assert (solver["nesterov"], solver["weight_decay"], cfg["trainer"]["amp"]) == (True, 1e-4, "auto"), (
            path
        )
        assert solver["batch_size"] in (64, 128), path  # + as many augmented copies: 128 or 256 per step


def test_tst_search_points_in_epochs_equal_the_fractions():
    defaults = schema_defaults("shapes", "tst")["distiller"]
    terms = {"kd": (1.0, build_term("kd", defaults["kd"]))}
    by_fraction = build_method(
        "tst", _Net(), _Net(), terms, {"search_at": [0.125, 0.375], "search_length": 0.125}
    )
    by_epochs = build_method("tst", _Net(), _Net(), terms, {"search_epochs": [30, 90], "search_passes": 30})
    assert by_fraction.search_epochs(240) == by_epochs.search_epochs(240) == [30, 90]
    assert by_fraction.search_passes(240) == by_epochs.search_passes(240) == 30
    assert by_fraction.search_epochs(8) == [1, 3] and by_epochs.search_epochs(60) == [30]


# -- the teacher's BatchNorm ------------------------------------------------------------------------
def _kd_distiller(bn_mode):
    cfg = load_config(None, ["teacher.name=resnet8", "teacher.train=true", f"teacher.bn_mode={bn_mode}"])
    torch.manual_seed(0)
    teacher = build_model("resnet8", 20)
    with torch.no_grad():  # running statistics far from any batch's, so the two modes differ
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return build_distiller(cfg, build_model("resnet8", 20), teacher)


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_teacher_batchnorm_mode_and_running_statistics_never_change(bn_mode):
    d = _kd_distiller(bn_mode)
    assert d.teacher_bn_mode == bn_mode
    d.train()
    bns = [m for m in d.teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not d.teacher.training and all(m.training == (bn_mode == "train") for m in bns)
    before = copy.deepcopy(d.teacher.state_dict())
    reference = copy.deepcopy(d.teacher).train(bn_mode == "train")  # the official code's teacher
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 20, (8,))
    logits, losses = d.forward_train(x, y)
    with torch.no_grad():
        t_logits = reference(x)
    kd = d.terms["kd"].loss
    torch.testing.assert_close(losses["kd"], 0.9 * kd(logits, t_logits), rtol=1e-5, atol=1e-6)
    for key, value in d.teacher.state_dict().items():  # running stats and counters untouched
        assert torch.equal(value, before[key]), key
    # Evaluation (the teacher's top-1) always uses the running statistics.
    d.eval()
    assert not any(m.training for m in d.teacher.modules())
    with torch.no_grad():
        torch.testing.assert_close(d.teacher(x), copy.deepcopy(reference).eval()(x))


# -- data normalisation -----------------------------------------------------------------------------
def test_normalisations_are_the_official_constants():
    # ReviewKD / TSKD train.py: mean [125.3, 123.0, 113.9] / 255, std [63.0, 62.1, 66.7] / 255.
    assert CIFAR10_MEAN == tuple(v / 255.0 for v in (125.3, 123.0, 113.9))
    assert CIFAR10_STD == tuple(v / 255.0 for v in (63.0, 62.1, 66.7))
    # RepDistiller / mdistiller / TST: CIFAR-100's own.
    assert (CIFAR100_MEAN, CIFAR100_STD) == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("cifar10", (CIFAR10_MEAN, CIFAR10_STD)),
        ("imagenet", (IMAGENET_MEAN, (0.229, 0.224, 0.225))),
        ("[[0.5, 0.4, 0.3], [0.2, 0.25, 0.3]]", ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))),
    ],
)
def test_dataset_normalize_sets_the_input_statistics(value, expected):
    cfg = load_config(
        None, ["dataset.shapes.train_size=40", "dataset.shapes.test_size=20", f"dataset.normalize={value}"]
    )
    data = build_data(cfg["dataset"])
    mean, std = normalisation_of(data.train)
    assert mean == pytest.approx(expected[0], abs=1e-6) and std == pytest.approx(expected[1], abs=1e-6)


@pytest.mark.parametrize("value", ["cifar", "[[0.5, 0.5, 0.5]]", "[[0.5, 0.5, 0.5], [0.2, 0.0, 0.2]]", "3"])
def test_bad_dataset_normalize_names_the_key(value):
    with pytest.raises(ConfigError, match="dataset.normalize"):
        load_config(None, [f"dataset.normalize={value}"])


# -- DTD + KA -----------------------------------------------------------------------------------------
def test_dtd_ka_module_and_term_share_one_ka_default():
    module_default = inspect.signature(DTDKDLoss).parameters["ka"].default
    term_default = schema_defaults("shapes", "dtd_ka")["distiller"]["dtd_ka"]["ka"]
    assert module_default == term_default == "ps"
    assert get_method("dtd_ka").terms == {"ce": 0.1, "dtd_ka": 0.9}


# -- every packaged CIFAR-100 config names its recipe ----------------------------------------------
def test_every_cifar100_config_names_its_recipe_source():
    paths = sorted(glob.glob(os.path.join(CONFIGS, "*", "*.yaml")))
    assert len(paths) == 5 * 9 + 15
    for path in paths:
        with open(path) as f:
            header = [line for line in f if line.startswith("#")]
        assert any(line.startswith("# Recipe:") for line in header), path
