"""ReviewKD's attention fusion as Triton kernels: the ops tskd_fast::abf_fuse_triton and
tskd_fast::abf_fuse_backward_triton.

Defined from the specs of tskd_fast.ops.abf (schemas, checks, fake kernels, autograd formula),
the same as the C++ ops tskd_fast::abf_fuse / abf_fuse_backward (csrc/cpu/abf_kernel.h,
csrc/include/tskd_fast/abf_math.h).

A program owns BLOCK_P pixels of one image and walks the channels in BLOCK_C chunks twice
(forward: the two attention sums, then the fused output; backward: the two gate gradients, then
d x, d y_up and the weight sums). Maps are addressed through their strides, so NCHW and
channels_last are read in place; the residual through a per-pixel source index (never
upsampled in memory). Backward adds d y_up into a float32 (float64) buffer with atomics and
writes per-program weight partials, summed afterwards in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tskd_fast.ops.abf import ABF_FUSE, ABF_FUSE_BACKWARD
from tskd_fast.ops.common import empty_in_layout, kernel_channels_last, kernel_memory_format, opmath_dtype
from tskd_fast.ops.library import define_triton
from tskd_fast.ops.triton._launch import check_device_runs_triton, quiet_interpreter, runs_in_interpreter

BLOCK_P = 64
BLOCK_C = 32


@triton.jit
def _abf_forward_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    src_ptr,
    out_ptr,
    gates_ptr,
    M,
    HW,
    sxn,
    sxc,
    sxp,
    syn,
    syc,
    syp,
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    n = tl.program_id(1)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < HW
    src = tl.load(src_ptr + p, mask=p_ok, other=0)
    x_base = x_ptr + n * sxn + p[None, :] * sxp
    y_base = y_ptr + n * syn + src[None, :] * syp
    a0 = tl.zeros((BLOCK_P,), dtype=ACC) + tl.load(b_ptr).to(ACC)
    a1 = tl.zeros((BLOCK_P,), dtype=ACC) + tl.load(b_ptr + 1).to(ACC)
    for c0 in range(0, M, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < M
        ok = c_ok[:, None] & p_ok[None, :]
        xv = tl.load(x_base + c[:, None] * sxc, mask=ok, other=0.0).to(ACC)
        yv = tl.load(y_base + c[:, None] * syc, mask=ok, other=0.0).to(ACC)
        w0x = tl.load(w_ptr + c, mask=c_ok, other=0.0).to(ACC)
        w0y = tl.load(w_ptr + M + c, mask=c_ok, other=0.0).to(ACC)
        w1x = tl.load(w_ptr + 2 * M + c, mask=c_ok, other=0.0).to(ACC)
        w1y = tl.load(w_ptr + 3 * M + c, mask=c_ok, other=0.0).to(ACC)
        a0 += tl.sum(w0x[:, None] * xv + w0y[:, None] * yv, axis=0)
        a1 += tl.sum(w1x[:, None] * xv + w1y[:, None] * yv, axis=0)
    z0 = 1.0 / (1.0 + tl.exp(-a0))
    z1 = 1.0 / (1.0 + tl.exp(-a1))
    g_base = gates_ptr + (n * HW + p) * 2
    tl.store(g_base, z0, mask=p_ok)
    tl.store(g_base + 1, z1, mask=p_ok)
    for c0 in range(0, M, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        ok = (c < M)[:, None] & p_ok[None, :]
        xv = tl.load(x_base + c[:, None] * sxc, mask=ok, other=0.0).to(ACC)
        yv = tl.load(y_base + c[:, None] * syc, mask=ok, other=0.0).to(ACC)
        fused = xv * z0[None, :] + yv * z1[None, :]
        tl.store(out_ptr + n * sxn + p[None, :] * sxp + c[:, None] * sxc, fused, mask=ok)


@triton.jit
def _abf_backward_kernel(
    g_ptr,
    x_ptr,
    y_ptr,
    w_ptr,
    gates_ptr,
    src_ptr,
    dx_ptr,
    dy_ptr,
    part_ptr,
    M,
    HW,
    sxn,
    sxc,
    sxp,
    syn,
    syc,
    syp,
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    n = tl.program_id(1)
    program = n * tl.num_programs(0) + tl.program_id(0)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < HW
    src = tl.load(src_ptr + p, mask=p_ok, other=0)
    x_off = n * sxn + p[None, :] * sxp
    y_off = n * syn + src[None, :] * syp
    d0 = tl.zeros((BLOCK_P,), dtype=ACC)
    d1 = tl.zeros((BLOCK_P,), dtype=ACC)
    for c0 in range(0, M, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        ok = (c < M)[:, None] & p_ok[None, :]
        g = tl.load(g_ptr + x_off + c[:, None] * sxc, mask=ok, other=0.0).to(ACC)
        xv = tl.load(x_ptr + x_off + c[:, None] * sxc, mask=ok, other=0.0).to(ACC)
        yv = tl.load(y_ptr + y_off + c[:, None] * syc, mask=ok, other=0.0).to(ACC)
        d0 += tl.sum(g * xv, axis=0)
        d1 += tl.sum(g * yv, axis=0)
    z0 = tl.load(gates_ptr + (n * HW + p) * 2, mask=p_ok, other=0.0).to(ACC)
    z1 = tl.load(gates_ptr + (n * HW + p) * 2 + 1, mask=p_ok, other=0.0).to(ACC)
    da0 = d0 * z0 * (1.0 - z0)
    da1 = d1 * z1 * (1.0 - z1)
    part = part_ptr + program * (4 * M + 2)
    tl.store(part + 4 * M, tl.sum(da0, axis=0))
    tl.store(part + 4 * M + 1, tl.sum(da1, axis=0))
    for c0 in range(0, M, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < M
        ok = c_ok[:, None] & p_ok[None, :]
        g = tl.load(g_ptr + x_off + c[:, None] * sxc, mask=ok, other=0.0).to(ACC)
        xv = tl.load(x_ptr + x_off + c[:, None] * sxc, mask=ok, other=0.0).to(ACC)
        yv = tl.load(y_ptr + y_off + c[:, None] * syc, mask=ok, other=0.0).to(ACC)
        w0x = tl.load(w_ptr + c, mask=c_ok, other=0.0).to(ACC)
        w0y = tl.load(w_ptr + M + c, mask=c_ok, other=0.0).to(ACC)
        w1x = tl.load(w_ptr + 2 * M + c, mask=c_ok, other=0.0).to(ACC)
        w1y = tl.load(w_ptr + 3 * M + c, mask=c_ok, other=0.0).to(ACC)
        dx = g * z0[None, :] + w0x[:, None] * da0[None, :] + w1x[:, None] * da1[None, :]
        tl.store(dx_ptr + x_off + c[:, None] * sxc, dx, mask=ok)
        dyu = g * z1[None, :] + w0y[:, None] * da0[None, :] + w1y[:, None] * da1[None, :]
        tl.atomic_add(dy_ptr + y_off + c[:, None] * syc, dyu, mask=ok)
        tl.store(part + c, tl.sum(da0[None, :] * xv, axis=1), mask=c_ok)
        tl.store(part + M + c, tl.sum(da0[None, :] * yv, axis=1), mask=c_ok)
        tl.store(part + 2 * M + c, tl.sum(da1[None, :] * xv, axis=1), mask=c_ok)
        tl.store(part + 3 * M + c, tl.sum(da1[None, :] * yv, axis=1), mask=c_ok)


INTERPRETED = runs_in_interpreter(_abf_forward_kernel)


def source_pixels(h: int, w: int, yh: int, yw: int, device: torch.device) -> torch.Tensor:
    """(h * w,) int32: the residual pixel each pixel reads, by F.interpolate's nearest rule
    (tskd_fast/abf_math.h nearest_source: float32 scale in / out, floor, clamp)."""

    def axis(out: int, size: int) -> torch.Tensor:
        dst = torch.arange(out, device=device)
        if out == size:
            return dst
        if out == 2 * size:
            return dst // 2
        scale = torch.tensor(size, dtype=torch.float32) / torch.tensor(out, dtype=torch.float32)
        src = torch.floor(dst.to(torch.float32) * scale.to(device)).to(torch.int64)
        return src.clamp_max(size - 1)

    return (axis(h, yh)[:, None] * yw + axis(w, yw)[None, :]).reshape(-1).to(torch.int32)


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=kernel_memory_format(channels_last))


def _map_strides(t: torch.Tensor, channels_last: bool) -> tuple[int, int, int]:
    """(batch, channel, pixel) strides of a map contiguous in a kernel layout (pixels flattened).
    Canonical ones: a size-1 dimension may report any stride, which is no pixel stride."""
    m, hw = t.shape[1], t.shape[2] * t.shape[3]
    return (m * hw, 1, m) if channels_last else (m * hw, hw, 1)


def abf_fuse_triton_impl(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    check_device_runs_triton(x, INTERPRETED)
    channels_last = kernel_channels_last(x)
    x, y = _layout(x, channels_last), _layout(y, channels_last)
    weight, bias = weight.contiguous(), bias.contiguous()
    n, m, h, w = x.shape
    acc = opmath_dtype(x.dtype)
    src = source_pixels(h, w, y.shape[2], y.shape[3], x.device)
    out = empty_in_layout(x, channels_last)
    gates = torch.empty((n, h * w, 2), dtype=acc, device=x.device)
    grid = (triton.cdiv(h * w, BLOCK_P), n)
    with quiet_interpreter(INTERPRETED):
        _abf_forward_kernel[grid](
            x,
            y,
            weight,
            bias,
            src,
            out,
            gates,
            m,
            h * w,
            *_map_strides(x, channels_last),
            *_map_strides(y, channels_last),
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            BLOCK_P=BLOCK_P,
            BLOCK_C=BLOCK_C,
        )
    return out, gates


def abf_fuse_backward_triton_impl(
    grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    check_device_runs_triton(x, INTERPRETED)
    n, m, h, w = x.shape
    acc = opmath_dtype(x.dtype)
    channels_last = kernel_channels_last(x)
    x, y, grad = _layout(x, channels_last), _layout(y, channels_last), _layout(grad, channels_last)
    weight, gates = weight.contiguous(), gates.contiguous()
    src = source_pixels(h, w, y.shape[2], y.shape[3], x.device)
    dx = empty_in_layout(x, channels_last)
    dy_acc = _layout(torch.zeros(y.shape, dtype=acc, device=x.device), channels_last)
    grid = (triton.cdiv(h * w, BLOCK_P), n)
    partials = torch.empty((grid[0] * n, 4 * m + 2), dtype=acc, device=x.device)
    with quiet_interpreter(INTERPRETED):
        _abf_backward_kernel[grid](
            grad,
            x,
            y,
            weight,
            gates,
            src,
            dx,
            dy_acc,
            partials,
            m,
            h * w,
            *_map_strides(x, channels_last),
            *_map_strides(y, channels_last),
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            BLOCK_P=BLOCK_P,
            BLOCK_C=BLOCK_C,
        )
    total = partials.sum(dim=0)
    dy = empty_in_layout(y, channels_last)
    dy.copy_(dy_acc)
    return dx, dy, total[: 4 * m].reshape(2, 2 * m).clone(), total[4 * m :].clone()


#: The op overloads, called like torch.ops.tskd_fast.abf_fuse.default / abf_fuse_backward.default.
abf_fuse_backward_triton = define_triton(ABF_FUSE_BACKWARD, abf_fuse_backward_triton_impl)
abf_fuse_triton = define_triton(ABF_FUSE, abf_fuse_triton_impl)
