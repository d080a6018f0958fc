# Every target sets itself up on a fresh machine: a virtual environment in .venv with the pinned
# torch, and tskd_fast installed from this tree (the C++/CUDA extension built in place).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
SOURCES := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)

.PHONY: demo test bench lint format cmake-test cuda-build gpu-check clean

## demo: distil a student on the embedded dataset and print the accuracies (the main job)
demo: $(VENV)/.built
	$(VENV)/bin/tskd-fast train

## test: the whole test-suite (Triton kernels in the interpreter when there is no GPU)
test: $(VENV)/.built
	$(PY) -m pytest -q

## bench: every fused op against eager PyTorch and torch.compile, and whole training steps (tskd-fast bench)
bench: $(VENV)/.built
	$(VENV)/bin/tskd-fast bench

## lint: ruff (lint and format) and clang-format, checking only
lint: $(VENV)/.deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror $(filter-out setup.py pyproject.toml,$(SOURCES))

## format: apply ruff format and clang-format
format: $(VENV)/.deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(filter-out setup.py pyproject.toml,$(SOURCES))

## cmake-test: the CMake build of csrc/ and its C++ tests (CPU)
cmake-test: $(VENV)/.deps
	$(VENV)/bin/cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		-DPython_EXECUTABLE=$(abspath $(PY))
	$(VENV)/bin/cmake --build build/cmake
	$(VENV)/bin/ctest --test-dir build/cmake --output-on-failure

## cuda-build: compile the CUDA kernels (no GPU needed) with warnings as errors, outside the tree
cuda-build: $(VENV)/.deps
	FORCE_CUDA=1 TSKD_FAST_WERROR=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}" \
		$(PY) setup.py -q build_ext --build-temp build/cuda/temp --build-lib build/cuda/lib

## gpu-check: on a GPU machine, build for its GPU, run the tests, time the KD loss, print a summary
## (the system python3 and what it has installed: no venv, no downloads; logs in OUT=dir)
gpu-check:
	PYTHON=$(PYTHON) bash scripts/gpu_check.sh $(OUT)

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q triton pytest pytest-benchmark ruff clang-format "cmake>=3.27" ninja pyyaml tqdm tensorboard matplotlib
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build tskd_fast/_C*.so tskd_fast/_build_info.py $(VENV)/.built
