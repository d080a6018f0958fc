"""Forward + backward of every fused op family against eager and torch.compile of its reference.

The cases (shapes, inputs, baselines) are those of `tskd-fast bench` (tskd_fast.bench.cases);
each case's group holds the fused backend(s), eager and compile, for pytest-benchmark's table.
Families whose op is not in this build are not collected.
"""

import pytest
import torch

from tskd_fast.bench.cases import FAMILIES, forward_backward
from tskd_fast.bench.runner import implementations

CASES = [
    pytest.param(family, shape, id=f"{family.name}-{shape.label}")
    for family in FAMILIES.values()
    if family.available()
    for shape in family.shapes_for(quick=False, device=torch.device("cpu"))
]
DEVICE = torch.device("cpu")


@pytest.mark.parametrize("family,shape", CASES)
@pytest.mark.parametrize("name", ["cpu", "eager", "compile"])
def test_op_forward_backward(benchmark, family, shape, name):
    benchmark.group = f"{family.name} {shape.label} float32"
    impls = implementations(family, DEVICE, torch.float32, compile_baseline=name == "compile")
    if name not in impls:
        pytest.fail(f"{name} cannot run here: the fused CPU kernels are not built")
    inputs = family.make_inputs(shape, DEVICE, torch.float32)
    step = forward_backward(impls[name][1], inputs)
    step()  # compile / warm up outside the timing
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    assert all(leaf.grad is not None for leaf in inputs.leaves)
