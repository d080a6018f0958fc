"""Every method's training step on tiny models, in the state where its whole step runs (tskd: a
review epoch; reviewkd: inside its warm-up, so the HCL scale is a schedule value): for the compile,
CUDA-graph and host-sync tests."""

import torch

from tskd_fast.distillers import RunInfo
from tskd_fast.engine.build import build_distiller
from tskd_fast.engine.config import load_config
from tskd_fast.models import build_model

CLASSES, EPOCHS = 20, 8
METHODS = {
    "vanilla": [],
    "kd": [],
    "dtd_ka": [],
    "reviewkd": ["distiller.reviewkd.mid_channel=8", "distiller.reviewkd.warmup_epochs=4"],
    "tskd": ["distiller.tskd.hidden_channels=[4,4,3]"],
    "tst": [],
}


def tiny_distiller(method: str, device: str = "cpu", overrides: tuple[str, ...] = ()):
    """(distiller in train mode on `device`, the epoch its step is taken in); ``overrides``: more
    config overrides."""
    cfg = load_config(
        None,
        [
            f"distiller.name={method}",
            "student.name=resnet8",
            "teacher.name=resnet8",
            *METHODS[method],
            *overrides,
        ],
    )
    torch.manual_seed(0)
    d = build_distiller(cfg, build_model("resnet8", CLASSES), build_model("resnet8", CLASSES)).to(device)
    d.bind_run(RunInfo(torch.device(device), None, None, mean=(0.5,) * 3, std=(0.25,) * 3))
    d.train()
    epoch = 2 if method == "reviewkd" else EPOCHS - 1
    if method == "tskd":
        epoch = d.schedule.review_epochs(EPOCHS)[0]
    for earlier in range(epoch):
        d.on_epoch_start(earlier, EPOCHS)
        d.on_epoch_end(earlier)
    d.on_epoch_start(epoch, EPOCHS)
    if method == "tskd":
        assert d.reviewing
    return d, epoch


def batch(n: int = 4, device: str = "cpu"):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    return x.to(device), y.to(device)
