"""Small per-row helpers shared by the Triton row kernels (online maxima and argmax)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def nan_as_inf(x):
    """x with NaN replaced by +inf, so that a row maximum flags NaN as non-finite: GPU max
    instructions drop NaN instead of propagating it."""
    return tl.where(x != x, float("inf"), x)


@triton.jit
def shift(m):
    """The finite offset subtracted before exponentiating: the running maximum, or 0 while it is
    +-inf (nothing summed yet, or a row that ends up NaN anyway), so that -inf - -inf never occurs."""
    return tl.where(tl.abs(m) < float("inf"), m, 0.0)


@triton.jit
def rescale(m_old, m_new, inv_tau):
    """exp((m_old - m_new) / tau): the factor that re-bases sums of exp((x - m_old) / tau) on the
    new maximum; 0 while nothing was summed (m_old == -inf), whatever m_new is."""
    return tl.where(m_old == float("-inf"), 0.0, tl.exp((m_old - m_new) * inv_tau))


@triton.jit
def rescale_unit(m_old, m_new):
    """rescale at temperature 1."""
    return tl.where(m_old == float("-inf"), 0.0, tl.exp(m_old - m_new))


@triton.jit
def first_max_index(x, x_max, cols):
    """Per row of the [ROWS, BLOCK_C] tile x, the first column (from cols) where x equals x_max
    (torch.argmax's tie rule); a large sentinel where none does."""
    hit = x == x_max[:, None]
    return tl.min(tl.where(hit, cols[None, :], 2147483647), axis=1)
