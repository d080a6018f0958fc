"""The ``tst`` method: search objective, search schedule, a search phase that lowers the module's
objective, the student step on original + augmented batches, configs and errors."""

import pytest
import torch
from torch import nn

from tskd_fast.distillers import RunInfo, build_term, get_method
from tskd_fast.distillers.tst import TSTDistiller, search_objective
from tskd_fast.engine.config import load_config, schema_defaults
from tskd_fast.errors import ConfigError

MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)


class TinyNet(nn.Module):
    """conv -> ReLU -> global pool -> linear: a model small enough for many steps in a test."""

    def __init__(self, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x, with_features=False):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _images(b=8, size=16):
    pixels = torch.randint(0, 256, (b, 3, size, size)).float() / 255.0
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _distiller(terms=None, **options):
    defaults = schema_defaults("shapes", "tst")["distiller"]
    weights = terms or {"ce": 0.1, "kd": 0.9}
    built = {name: (w, build_term(name, defaults[name])) for name, w in weights.items()}
    opts = {**defaults["tst"], "mean": list(MEAN), "std": list(STD), **options}
    d = TSTDistiller(TinyNet(), TinyNet(), built, opts)
    d.bind_run(RunInfo(device=torch.device("cpu"), amp_dtype=None, run_dir=None))
    return d


def test_search_objective_matches_its_definition():
    s, t = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 4, 2, 2, 3])
    loss, t_ce, s_term = search_objective(s, t, y, "confidence")
    p_s = s.softmax(1)[torch.arange(6), y]
    expected_t = -t.log_softmax(1)[torch.arange(6), y].mean()
    torch.testing.assert_close(t_ce, expected_t)
    torch.testing.assert_close(s_term, (-torch.log(1 - p_s)).mean())
    torch.testing.assert_close(loss, t_ce + s_term)
    loss2, _, s_term2 = search_objective(s, t, y, "ce_difference")
    torch.testing.assert_close(s_term2, -nn.functional.cross_entropy(s, y))
    with pytest.raises(ValueError, match="kind must be one of"):
        search_objective(s, t, y, "other")


def test_search_schedule_is_a_fraction_of_the_run():
    d = _distiller()
    assert d.search_epochs(240) == [30, 90] and d.search_passes(240) == 30  # the reference's CIFAR schedule
    assert d.search_epochs(8) == [1, 3] and d.search_passes(8) == 1  # the default run gets short phases
    assert [d.phase_passes(e, 8) for e in range(8)] == [0, 1, 0, 1, 0, 0, 0, 0]


def test_student_step_sees_original_and_augmented_halves():
    d = _distiller(terms={"ce": 0.1, "kd": 0.9, "dtd_ka": 0.5})
    x, y = _images(), torch.randint(0, 5, (8,))
    seen = []
    d.student.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    logits, losses = d.forward_train(x, y)
    assert logits.shape == (8, 5) and seen == [16]  # loader batch B, student batch 2B
    assert set(losses) == {"ce", "kd", "dtd_ka"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert d.student.conv.weight.grad is not None
    assert d.augment.probability_logits.grad is None  # the module does not learn in student steps
    assert not any(p.requires_grad for p in d.teacher.parameters())


def _mean_objective(d, x, y, draws=8):
    with torch.no_grad():
        total = 0.0
        for seed in range(draws):
            aug = d.augment(x, generator=torch.Generator().manual_seed(seed))
            total += search_objective(d.student(aug), d.teacher(aug), y)[0].item()
    return total / draws


def test_a_short_search_phase_lowers_the_module_objective():
    # Random tiny nets hardly react to their input; larger classifier weights make the objective
    # depend on the augmentation. Four ops, all applied each step, at temperature 1: a clear signal.
    torch.manual_seed(0)
    d = _distiller(
        search_lr=1.0, temperature=1.0, ops=["brightness", "contrast", "rotate", "invert"], num_ops=4
    )
    with torch.no_grad():
        for model in (d.student, d.teacher):
            model.fc.weight.mul_(10.0)
    x, y = _images(16), torch.randint(0, 5, (16,))
    student_before = {k: v.clone() for k, v in d.student.state_dict().items()}
    before = _mean_objective(d, x, y)
    d.on_phase_pass_start(0, 0, 1)
    for _ in range(20):
        d.phase_step(x, y, 0, 0)
    after = _mean_objective(d, x, y)
    assert after < before - 0.2, (before, after)
    # Only the module learned: the frozen student is back in train mode with its flags and weights.
    assert d.student.training and all(p.requires_grad for p in d.student.parameters())
    assert all(torch.equal(v, student_before[k]) for k, v in d.student.state_dict().items())


def test_plateau_rule_lowers_the_module_lr():
    d = _distiller()
    d.on_phase_pass_start(0, 0, 3)
    assert d.on_phase_pass_end(0, 0, 3, {"loss": 2.0}) == {"lr": 0.01}
    d.on_phase_pass_end(0, 1, 3, {"loss": 1.999})  # fell by less than 0.02: lr * 0.9
    assert d.search_optimizer.param_groups[0]["lr"] == pytest.approx(0.009)
    d.on_phase_pass_end(0, 2, 3, {"loss": 1.5})  # fell a lot: unchanged
    assert d.search_optimizer.param_groups[0]["lr"] == pytest.approx(0.009)
    d.on_phase_pass_start(1, 0, 3)  # a new phase starts afresh
    assert d.search_optimizer.param_groups[0]["lr"] == 0.01 and d.plateau_last is None


def test_method_is_registered_with_its_options():
    entry = get_method("tst")
    assert entry.needs_teacher and entry.terms == {"ce": 0.1, "kd": 0.9}
    cfg = load_config(None, ["distiller.name=tst"])
    assert cfg["distiller"]["terms"]["kd"] == 0.9 and cfg["distiller"]["tst"]["num_ops"] == 4


@pytest.mark.parametrize(
    "override,message",
    [
        ("distiller.tst.ops=[brightness,blur]", "distiller.tst.ops.*unknown ops \\['blur'\\]"),
        ("distiller.tst.search_at=[1.5]", "distiller.tst.search_at.*\\[0, 1\\)"),
        ("distiller.tst.objective=other", "distiller.tst.objective"),
    ],
)
def test_bad_options_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["distiller.name=tst", override])


def test_num_ops_beyond_the_op_list_names_the_option():
    with pytest.raises(
        ConfigError, match="distiller.tst: num_ops must be an integer from 1 to the number of ops \\(2\\)"
    ):
        _distiller(ops=["invert", "rotate"], num_ops=3)


def test_packaged_configs_resolve():
    from importlib import resources

    folder = resources.files("tskd_fast") / "configs" / "cifar100" / "tst"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    kd = sorted(p.name for p in (resources.files("tskd_fast") / "configs" / "cifar100" / "kd").iterdir())
    assert names == [n for n in kd if n.endswith(".yaml")]
    for name in names:
        cfg = load_config(f"configs/cifar100/tst/{name}")
        assert cfg["distiller"]["name"] == "tst" and cfg["dataset"]["name"] == "cifar100"
        # Whole epochs of the 240-epoch recipe: the reference's search points for the pair.
        epochs = [f * 240 for f in cfg["distiller"]["tst"]["search_at"]]
        assert all(abs(e - round(e)) < 1e-6 for e in epochs)
        expected = [32, 62, 92, 122, 152, 182, 212] if name == "vgg13_vgg8.yaml" else [30, 90]
        assert [round(e) for e in epochs] == expected


def test_training_set_normalisation_is_found():
    from torch.utils.data import Subset

    from tskd_fast.data.tensor_dataset import AugmentedTensorDataset
    from tskd_fast.data.transforms import cifar_transforms
    from tskd_fast.engine.normalisation import normalisation_of

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    memory = AugmentedTensorDataset(images, torch.zeros(4, dtype=torch.long), MEAN, STD)
    mean, std = normalisation_of(Subset(memory, [0, 1]))
    torch.testing.assert_close(torch.tensor(mean), torch.tensor(MEAN))
    torch.testing.assert_close(torch.tensor(std), torch.tensor(STD))

    class Folder:
        transform = cifar_transforms(32, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))[0]

    assert normalisation_of(Folder()) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert normalisation_of(object()) is None
