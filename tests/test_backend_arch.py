"""Which backend runs CUDA tensors given the architectures the CUDA kernels were built for.

No GPU here: the device capability and the recorded arch list are stand-ins (monkeypatched), the
decision itself (tskd_fast.ops.backend) is the real one.
"""

import warnings

import pytest
import torch

from tskd_fast.ops import _extension, backend

CUDA1 = torch.device("cuda", 1)


@pytest.mark.parametrize(
    "capability,arch_list,runs",
    [
        # SASS: same major, minor >= the built one
        ((8, 0), "8.0;9.0", True),
        ((8, 6), "8.0;9.0", True),
        ((8, 9), "8.0", True),
        ((7, 5), "8.0;9.0", False),
        ((9, 0), "8.0", False),  # another major needs PTX
        ((10, 0), "8.0;9.0", False),  # the old default: no PTX, so no kernel image on Blackwell
        ((12, 0), "9.0", False),
        ((8, 0), "8.6", False),  # a lower minor than built
        # PTX: any capability >= the PTX's
        ((10, 0), "8.0;9.0+PTX", True),  # the default now
        ((12, 1), "8.0;9.0+PTX", True),
        ((9, 0), "8.0+PTX", True),
        ((7, 0), "7.5+PTX", False),
        ((7, 5), "8.0;9.0+PTX", False),
        # arch-specific (a): exactly that GPU, for SASS and PTX alike
        ((9, 0), "9.0a", True),
        ((9, 0), "9.0a+PTX", True),
        ((10, 0), "9.0a+PTX", False),
        ((9, 2), "9.0a", False),
        # family-specific (f): the family, minor >= the built one
        ((10, 3), "10.0f", True),
        ((10, 0), "10.3f", False),
        ((12, 0), "10.0f+PTX", False),
        # syntax: spaces, empty entries, torch's named lists
        ((9, 0), "8.0 9.0", True),
        ((9, 0), ";8.0;;9.0;", True),
        ((8, 6), "Ampere", True),
        ((9, 0), "Ampere", True),  # Ampere ends with 8.6+PTX
        ((7, 2), "Volta+Tegra", True),
        ((7, 5), "Volta+Tegra", True),
        ((8, 0), "Volta+Tegra", False),
        ((10, 0), "Hopper", True),
        ((7, 0), "Hopper", False),
        ((9, 0), "", False),
    ],
)
def test_cuda_kernels_run_on(capability, arch_list, runs):
    assert backend.cuda_kernels_run_on(capability, arch_list) is runs


def test_default_arch_list_has_ptx_for_its_newest_architecture():
    assert backend.DEFAULT_CUDA_ARCH_LIST.split(";")[-1].endswith("+PTX")
    assert backend.cuda_kernels_run_on((12, 0), backend.DEFAULT_CUDA_ARCH_LIST)
    setup_py = (backend.__file__.rsplit("/tskd_fast/", 1)[0]) + "/setup.py"
    with open(setup_py) as f:
        assert f'DEFAULT_CUDA_ARCH_LIST = "{backend.DEFAULT_CUDA_ARCH_LIST}"' in f.read()


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA build for a chosen arch list and a cuda:1 of a chosen capability, decided afresh."""
    state = {"arch_list": "8.0;9.0", "capability": (9, 0), "triton": True, "queried": []}

    def capability(index):
        state["queried"].append(index)
        return state["capability"]

    monkeypatch.setattr(_extension, "has_cuda_kernels", lambda: True)
    monkeypatch.setattr(_extension, "cuda_arch_list", lambda: state["arch_list"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(backend, "triton_available", lambda: state["triton"])
    monkeypatch.setattr(backend, "_CUDA_RUNS", {})
    monkeypatch.setattr(backend, "_RESOLVED", {})
    backend._warn_arch_fallback.cache_clear()
    backend._warn_fallback.cache_clear()
    yield state
    backend._warn_arch_fallback.cache_clear()
    backend._warn_fallback.cache_clear()


def test_auto_runs_the_cuda_kernels_on_a_built_architecture(fake_cuda):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.resolve_backend("auto", CUDA1) == "cuda"
        assert backend.resolve_backend("cuda", CUDA1) == "cuda"
    assert fake_cuda["queried"] == [1]  # asked once for the device, then remembered


def test_auto_falls_back_to_triton_once_warned(fake_cuda):
    fake_cuda["capability"] = (12, 0)
    with pytest.warns(
        RuntimeWarning, match=r"none of which runs on cuda:1 \(compute capability 12.0\)"
    ) as got:
        assert backend.resolve_backend("auto", CUDA1) == "triton"
        assert backend.resolve_backend("auto", CUDA1) == "triton"
        assert backend.resolve_backend(None, torch.device("cuda")) == "triton"  # current device: 1
    assert len(got) == 1
    assert "using the Triton kernels instead" in str(got[0].message)
    assert 'TORCH_CUDA_ARCH_LIST="12.0"' in str(got[0].message)


def test_forced_cuda_on_an_unbuilt_architecture_says_why(fake_cuda):
    fake_cuda["capability"] = (7, 5)
    with pytest.raises(ValueError, match=r"backend='cuda' is unavailable: .*'8.0;9.0'.*capability 7.5"):
        backend.resolve_backend("cuda", CUDA1)
    assert backend.resolve_backend("triton", CUDA1) == "triton"


def test_without_triton_the_fallback_is_the_reference(fake_cuda):
    fake_cuda["capability"] = (12, 0)
    fake_cuda["triton"] = False
    with pytest.warns(RuntimeWarning, match="none of which runs on cuda:1.*triton is not installed"):
        assert backend.resolve_backend("auto", CUDA1) == "reference"


def test_ptx_build_runs_on_newer_gpus(fake_cuda):
    fake_cuda["arch_list"] = "8.0;9.0+PTX"
    fake_cuda["capability"] = (10, 0)
    assert backend.resolve_backend("auto", CUDA1) == "cuda"


def test_an_unrecorded_arch_list_counts_as_running(fake_cuda):
    """A GPU build by a setup.py that did not record its architectures keeps the old behaviour."""
    fake_cuda["arch_list"] = ""
    fake_cuda["capability"] = (12, 0)
    assert backend.resolve_backend("auto", CUDA1) == "cuda"
    assert fake_cuda["queried"] == []


def test_the_decision_is_a_constant_under_torch_compile(fake_cuda):
    fake_cuda["capability"] = (12, 0)

    def pick(x):
        if backend.resolve_backend("auto", CUDA1) == "triton":
            return x + 1
        return x - 1

    with pytest.warns(RuntimeWarning, match="using the Triton kernels instead"):
        out = torch.compile(pick, fullgraph=True, backend="eager")(torch.zeros(2))
    assert torch.equal(out, torch.ones(2))


def test_the_build_records_its_arch_list():
    """setup.py writes CUDA_ARCH_LIST into _build_info.py; a CPU-only build records ""."""
    from tskd_fast import _build_info

    assert isinstance(_build_info.CUDA_ARCH_LIST, str)
    assert (_build_info.CUDA_ARCH_LIST == "") == (not _build_info.WITH_CUDA)
    assert _extension.cuda_arch_list() == (
        _build_info.CUDA_ARCH_LIST if _extension.has_cuda_kernels() else ""
    )
