"""One training step of resnet32x4 -> resnet8x4 (batch 64, CIFAR-shaped) for every registered
method that distils, with the fused ops (auto) and with the PyTorch reference."""

import pytest
import torch

from tskd_fast.bench.steps import build_step, distilling_methods


@pytest.mark.parametrize("method", distilling_methods())
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_training_step(benchmark, method, backend):
    benchmark.group = f"step {method}"
    step = build_step(method, torch.device("cpu"), batch=64)[backend]
    step()
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
