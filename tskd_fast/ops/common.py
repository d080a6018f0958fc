"""Helpers every op family shares, each written once: the opmath dtype, the kernels' memory layout,
whether a tensor's values may be read now, the device guard of the Triton launches, and the
backward of the ops whose forward writes the gradient."""

from __future__ import annotations

import contextlib

import torch

# The dispatch modes that trace or fake tensors (torch internals: looked up defensively, so that a
# torch without them only loses the CPU backward shortcut, never correctness).
_MODE_KEYS = getattr(torch._C, "_TorchDispatchModeKey", None)
_TRACING_MODES = tuple(
    getattr(_MODE_KEYS, name) for name in ("PROXY", "FAKE", "FUNCTIONAL") if hasattr(_MODE_KEYS, name)
)
_get_dispatch_mode = getattr(torch._C, "_get_dispatch_mode", None)


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in (and return losses, weights and gates in) for inputs of
    `dtype`: float64 for float64, float32 otherwise (csrc: opmath_type)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def kernel_channels_last(t: torch.Tensor) -> bool:
    """Whether the map kernels read `t` as NHWC: channels_last-contiguous and not NCHW-contiguous
    (an (N, C, 1, 1) map is both and goes NCHW). The rule of csrc/include/tskd_fast/layout.h."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def kernel_memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def with_unit_class_stride(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) logits as the row kernels read them: unit stride along classes, rows possibly strided;
    copies only when the classes are strided (csrc: with_unit_class_stride)."""
    if logits.stride(1) == 1 and logits.stride(0) >= logits.shape[1]:
        return logits
    return logits.contiguous()


def empty_in_layout(
    t: torch.Tensor, channels_last: bool, shape=None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """A new tensor like `t` (or of `shape` / `dtype`) in the kernels' layout."""
    return torch.empty(
        shape if shape is not None else t.shape,
        dtype=dtype if dtype is not None else t.dtype,
        device=t.device,
        memory_format=kernel_memory_format(channels_last),
    )


def values_readable(t: torch.Tensor) -> bool:
    """Whether `t` holds real values that may be read now on the host: an eager plain CPU tensor,
    not traced, faked or compiled (csrc/autograd/saved_gradient.h: values_readable). Never true on
    CUDA, where a read would synchronise the stream; False when this torch cannot tell."""
    if t.device.type != "cpu" or type(t) is not torch.Tensor or torch.compiler.is_compiling():
        return False
    if _get_dispatch_mode is None or len(_TRACING_MODES) != 3:
        return False
    return all(_get_dispatch_mode(key) is None for key in _TRACING_MODES)


def _incoming_is_grad_scale(incoming: torch.Tensor, weight: float, grad_scale: float) -> bool:
    if incoming.dim() > 1 or not values_readable(incoming):
        return False
    if incoming.dim() == 0:  # one read instead of two small ops
        return incoming.item() * weight == grad_scale
    return bool((incoming.double() * weight == grad_scale).all())


def scale_saved_gradient(
    saved: torch.Tensor, incoming: torch.Tensor, weight: float, grad_scale: float
) -> torch.Tensor:
    """d loss / d input from saved = grad_scale * d out / d input (rows along the first dimension)
    and incoming = d loss / d out (0-d, or one value per row): saved * incoming * weight /
    grad_scale in a new tensor of saved's dtype, the product formed in float32 (float64 for
    float64); weight is the factor of the op's reduction (1/B for a mean).

    On the CPU, when every incoming * weight equals grad_scale (loss.backward() of the op's own
    reduction) and the values can be read (values_readable), `saved` itself: handing it on is
    safe, autograd clones it before accumulating while the graph (and so the saved tensor) is
    kept. On CUDA, and whenever traced, always the scaling pass: reading the incoming values
    would synchronise the stream, which costs more than the pass. The C++ twin:
    csrc/autograd/saved_gradient.cpp (the same gradients).
    """
    if saved.device.type == "cpu" and _incoming_is_grad_scale(incoming, weight, grad_scale):
        return saved
    factor = incoming * (weight / grad_scale)
    if factor.dim() == 1 and saved.dim() > 1:
        factor = factor.view((factor.shape[0],) + (1,) * (saved.dim() - 1))
    if factor.dtype not in (torch.float32, torch.float64):
        factor = factor.float()
    return torch.mul(saved, factor, out=torch.empty_like(saved))


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make `t`'s CUDA device the current one while allocating outputs and launching: Triton
    launches on the current device and stream, and torch.library.custom_op adds no device guard,
    so inputs on cuda:1 while cuda:0 is current would run on the wrong device. A no-op for CPU
    tensors (the interpreter)."""
    if t.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(t.device)
