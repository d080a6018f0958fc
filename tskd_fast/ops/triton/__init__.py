"""Triton kernels of the fused ops, wrapped as custom ops (tskd_fast::kd_loss_triton and
tskd_fast::dtd_weight_triton).

The submodules import triton and register their op on import (tskd_fast.ops imports them on
first use of the Triton backend); importing this package alone does neither, so `import
tskd_fast` stays cheap and works without triton installed.
"""
