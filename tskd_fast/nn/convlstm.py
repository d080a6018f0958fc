"""ConvLSTM modules over the fused gate op: ``ConvLSTMCell`` (one step) and ``ConvLSTM`` (a sequence).

One convolution over concat[x, h] gives the 4*C_h pre-activations in the order i, f, g, o (the
layout of the TSKD / Hzzone ConvLSTM, whose ``_conv.*`` and ``Wci``/``Wcf``/``Wco`` keys load
directly); the elementwise rest is ``tskd_fast.functional.convlstm_gates``. The convolution stays
with PyTorch (cuDNN / oneDNN). ndrplz's ConvLSTM_pytorch names its convolution ``conv`` too but
orders the gates i, f, o, g: convert its state dicts with ``permute_gate_blocks(sd, "ifog")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tskd_fast import functional as TF
from tskd_fast.ops.backend import BACKENDS

__all__ = ["ConvLSTM", "ConvLSTMCell", "permute_gate_blocks"]

GATE_ORDER = "ifgo"

# Keys of other implementations that mean the same tensors as ours (TSKD / Hzzone: ``_conv``, ``Wc*``).
_ALIASES = {
    "_conv.weight": "conv.weight",
    "_conv.bias": "conv.bias",
    "Wci": "w_ci",
    "Wcf": "w_cf",
    "Wco": "w_co",
}


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def permute_gate_blocks(state_dict: Mapping[str, Tensor], source_order: str) -> dict[str, Tensor]:
    """A copy of ``state_dict`` whose convolutions' 4*C_h output blocks are reordered to i, f, g, o.

    source_order: the gate order of the implementation the weights come from, a permutation of
    "ifgo" (ndrplz/ConvLSTM_pytorch: "ifog"). Every ``*conv.weight`` / ``*conv.bias`` key (dim 0 =
    4*C_h) is permuted; other entries are returned unchanged.
    """
    if sorted(source_order) != sorted(GATE_ORDER):
        raise ValueError(f"source_order must be a permutation of {GATE_ORDER!r}, got {source_order!r}")
    take = [source_order.index(g) for g in GATE_ORDER]
    out = dict(state_dict)
    for key, value in state_dict.items():
        if key.endswith(("conv.weight", "conv.bias")):
            if value.shape[0] % 4:
                raise ValueError(f"state_dict[{key!r}] has {value.shape[0]} output channels, not 4*C_h")
            blocks = value.chunk(4, dim=0)
            out[key] = torch.cat([blocks[i] for i in take], dim=0)
    return out


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: ``cell(x, state=None) -> (h, c)``.

    gates = conv(concat[x, h_prev]) (4*C_h channels: i, f, g, o), then
    i = sigmoid(a_i + w_ci*c_prev), f = sigmoid(a_f + w_cf*c_prev), g = tanh(a_g),
    c = f*c_prev + i*g, o = sigmoid(a_o + w_co*c), h = o*tanh(c).

    Args:
        in_channels: C_in of x.
        hidden_channels: C_h of h and c.
        kernel_size: odd int or pair of odd ints ("same" padding keeps H x W).
        bias: the convolution has a bias.
        peephole: add trainable peepholes w_ci, w_cf, w_co of shape (1, C_h, H, W), zero-initialised
            (as in the TSKD reference, where they are created but never trained); needs spatial_size.
        spatial_size: (H, W) (or an int) of the state; required with peephole=True.
        backend: backend of the gate op ("auto", "cpu", "cuda", "triton", "reference"; the
            TSKD_FAST_BACKEND environment variable changes what "auto" means).

    forward(x (B, C_in, H, W) or None, state ((B, C_h, H, W), (B, C_h, H, W)) or None):
        x None means an all-zero input (the TSKD forecaster); then the state is required and only
        the h-part of the convolution is computed. A missing state is zeros. Works on NCHW and
        channels_last tensors (a zero state takes x's layout) and under autocast (the state is
        cast to the convolution's dtype). Returns (h, c), each (B, C_h, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int],
        bias: bool = True,
        peephole: bool = False,
        spatial_size: int | Sequence[int] | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.hidden_channels = _positive_int(hidden_channels, "hidden_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be odd (same padding keeps H x W), got {kernel_size!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        self.conv = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            self.kernel_size,
            padding=self.padding,
            bias=bias,
        )
        self.spatial_size = None if spatial_size is None else _pair(spatial_size, "spatial_size")
        self.peephole = bool(peephole)
        if self.peephole:
            if self.spatial_size is None:
                raise ValueError(
                    "peephole=True needs spatial_size=(H, W): the peepholes w_ci, w_cf, w_co have one "
                    "weight per state position, shape (1, C_h, H, W)"
                )
            shape = (1, hidden_channels, *self.spatial_size)
            self.w_ci = nn.Parameter(torch.zeros(shape))
            self.w_cf = nn.Parameter(torch.zeros(shape))
            self.w_co = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("w_ci", None)
            self.register_parameter("w_cf", None)
            self.register_parameter("w_co", None)
        self.register_load_state_dict_pre_hook(_rename_aliases)

    def extra_repr(self) -> str:
        peep = f", peephole=True, spatial_size={self.spatial_size}" if self.peephole else ""
        return (
            f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}{peep}, "
            f"backend={self.backend!r}"
        )

    def zero_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zero (h, c) for an input x (B, C_in, H, W), in x's dtype, device and memory layout."""
        batch, _, height, width = x.shape
        layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        zeros = torch.zeros(
            batch, self.hidden_channels, height, width, dtype=x.dtype, device=x.device
        ).contiguous(memory_format=layout)
        return zeros, zeros

    def _check(self, x: Tensor | None, state: tuple[Tensor, Tensor] | None) -> None:
        if x is not None:
            if not isinstance(x, Tensor) or x.dim() != 4:
                raise ValueError(f"x must be a 4-D tensor (B, C_in, H, W), got {_describe(x)}")
            if x.shape[1] != self.in_channels:
                raise ValueError(
                    f"x must have in_channels={self.in_channels} channels, got shape {tuple(x.shape)}"
                )
        if state is None:
            if x is None:
                raise ValueError("x=None (a zero input) needs the state (h, c) to know the batch and size")
            return
        if not isinstance(state, tuple | list) or len(state) != 2:
            raise ValueError(f"state must be a pair (h, c) of tensors, got {_describe(state)}")
        h, c = state
        if x is not None:
            ref = (x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
        elif isinstance(h, Tensor) and h.dim() == 4:
            ref = (h.shape[0], self.hidden_channels, h.shape[2], h.shape[3])
        else:
            raise ValueError(f"state[0] (h) must be a 4-D tensor (B, C_h, H, W), got {_describe(h)}")
        for name, t in (("state[0] (h)", h), ("state[1] (c)", c)):
            if not isinstance(t, Tensor) or tuple(t.shape) != ref:
                raise ValueError(f"{name} must have shape (B, C_h, H, W) = {ref}, got {_describe(t)}")

    def _check_peephole_size(self, h: Tensor) -> None:
        if self.peephole and tuple(h.shape[2:]) != self.spatial_size:
            raise ValueError(
                f"this cell's peepholes are for states of size {self.spatial_size}, but the input is "
                f"{tuple(h.shape[2:])} (set spatial_size to the input's H x W)"
            )

    def forward(self, x: Tensor | None, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, state)
        weight, bias = self.conv.weight, self.conv.bias
        if state is None:
            # Zero state: the h columns of the convolution contribute nothing; skip them.
            assert x is not None
            h, c = self.zero_state(x)
            self._check_peephole_size(h)
            gates = F.conv2d(x, weight[:, : self.in_channels], bias, padding=self.padding)
        elif x is None:
            # All-zero input (the TSKD forecaster): only the h columns contribute.
            h, c = state
            self._check_peephole_size(h)
            gates = F.conv2d(h, weight[:, self.in_channels :], bias, padding=self.padding)
        else:
            h, c = state
            self._check_peephole_size(h)
            gates = self.conv(torch.cat([x, h.to(x.dtype)], dim=1))
        # Under autocast the convolution's output dtype differs from the state's: the op wants one.
        c = c.to(gates.dtype)
        peep = [None if w is None else w.to(gates.dtype) for w in (self.w_ci, self.w_cf, self.w_co)]
        return TF.convlstm_gates(gates, c, *peep, backend=self.backend)


class ConvLSTM(nn.Module):
    """A (stacked) ConvLSTM over a sequence: ``convlstm(input, state=None) -> (outputs, (h, c))``.

    Args:
        in_channels, hidden_channels, kernel_size, bias, peephole, spatial_size, backend: as for
            ConvLSTMCell; every layer has hidden_channels channels.
        num_layers: stacked layers; layer l > 0 reads layer l-1's hidden states.
        batch_first: input/outputs are (B, T, ...) instead of (T, B, ...).

    forward(input, state=None, *, steps=None):
        input: (T, B, C_in, H, W) (or (B, T, ...) with batch_first), T >= 1; each step may be NCHW
            or channels_last. None means ``steps`` all-zero input steps (then the state is required).
        state: optional initial (h0, c0), each (num_layers, B, C_h, H, W); zeros when None.
    Returns:
        outputs: the last layer's hidden state at every step, (T, B, C_h, H, W) (or batch_first);
        (h_n, c_n): the final states of every layer, each (num_layers, B, C_h, H, W).
    The per-layer cells are ``cell_list[l]`` (ndrplz's name, so its keys line up).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int],
        num_layers: int = 1,
        batch_first: bool = False,
        bias: bool = True,
        peephole: bool = False,
        spatial_size: int | Sequence[int] | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.batch_first = bool(batch_first)
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.hidden_channels = _positive_int(hidden_channels, "hidden_channels")
        self.cell_list = nn.ModuleList(
            ConvLSTMCell(
                in_channels if layer == 0 else hidden_channels,
                hidden_channels,
                kernel_size,
                bias=bias,
                peephole=peephole,
                spatial_size=spatial_size,
                backend=backend,
            )
            for layer in range(self.num_layers)
        )

    def forward(
        self,
        input: Tensor | None,
        state: tuple[Tensor, Tensor] | None = None,
        *,
        steps: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        time_dim = 1 if self.batch_first else 0
        if input is None:
            if state is None:
                raise ValueError("input=None (zero input steps) needs the initial state (h0, c0)")
            if steps is None or not isinstance(steps, int) or steps < 1:
                raise ValueError(
                    f"input=None needs steps >= 1 (the number of zero input steps), got {steps!r}"
                )
            length = steps
        else:
            if not isinstance(input, Tensor) or input.dim() != 5:
                layout = "(B, T, C_in, H, W)" if self.batch_first else "(T, B, C_in, H, W)"
                raise ValueError(f"input must be a 5-D tensor {layout}, got {_describe(input)}")
            length = input.shape[time_dim]
            if length == 0:
                raise ValueError(f"input is a sequence of length 0 (shape {tuple(input.shape)}); need T >= 1")
            if steps is not None and steps != length:
                raise ValueError(f"steps={steps} differs from the input's length {length}")
        layer_states = self._split_state(state)
        if input is None:
            layer_input: list[Tensor | None] = [None] * length
        else:
            layer_input = list(input.unbind(time_dim))
        finals_h, finals_c = [], []
        for layer, cell in enumerate(self.cell_list):
            hc = layer_states[layer]
            outputs = []
            for x in layer_input:
                hc = cell(x, hc)
                outputs.append(hc[0])
            finals_h.append(hc[0])
            finals_c.append(hc[1])
            layer_input = outputs  # type: ignore[assignment]
        out = torch.stack(layer_input, dim=time_dim)  # type: ignore[arg-type]
        return out, (_stack_layers(finals_h), _stack_layers(finals_c))

    def _split_state(self, state: tuple[Tensor, Tensor] | None) -> list[tuple[Tensor, Tensor] | None]:
        if state is None:
            return [None] * self.num_layers
        if not isinstance(state, tuple | list) or len(state) != 2:
            raise ValueError(f"state must be a pair (h0, c0) of tensors, got {_describe(state)}")
        h0, c0 = state
        for name, t in (("state[0] (h0)", h0), ("state[1] (c0)", c0)):
            if not isinstance(t, Tensor) or t.dim() != 5 or t.shape[0] != self.num_layers:
                raise ValueError(
                    f"{name} must have shape (num_layers={self.num_layers}, B, C_h, H, W), got {_describe(t)}"
                )
        return [(h0[layer], c0[layer]) for layer in range(self.num_layers)]


def _stack_layers(tensors: list[Tensor]) -> Tensor:
    # One layer: a view keeps the state's memory layout (and costs no copy).
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:120]


def _rename_aliases(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Accept the TSKD / Hzzone names (``_conv.*``, ``Wci``, ...) for this cell's tensors."""
    for alias, name in _ALIASES.items():
        key = prefix + alias
        if key in state_dict and prefix + name not in state_dict:
            state_dict[prefix + name] = state_dict.pop(key)
