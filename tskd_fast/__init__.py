"""tskd_fast: fused kernels for knowledge distillation, with drop-in modules and a trainer.

Layers, top to bottom: tskd_fast.train (CLI) -> distillers -> nn (modules) -> functional
(torch-like functions with a backend= switch) -> ops (custom ops: C++ CPU/CUDA, Triton) and
reference (plain PyTorch).
"""

from tskd_fast import functional, nn, ops, reference

__version__ = "0.1.0"

__all__ = ["functional", "nn", "ops", "reference", "__version__"]
