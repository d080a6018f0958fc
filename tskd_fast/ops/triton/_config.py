"""Launch shapes of the row kernels, chosen from the number of classes alone.

One configuration per class count, no autotuning: the kernels are bandwidth bound, the sizes below
were chosen from ptxas register counts for sm_90 (no spills in any configuration), and autotuning
with several configs does not run under TRITON_INTERPRET=1 anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

# Widest column block held in registers. A row up to this long is read once and kept in
# registers for the gradient; longer rows are walked in chunks of this width, twice. One 4096-wide
# row per program with 8 warps is 16 elements per thread: about 118 registers on sm_90 (ptxas),
# so two programs fit an SM with 64 KiB of float32 logits in flight.
MAX_BLOCK_C = 4096
# Rows at least this wide get a program each.
ONE_ROW_BLOCK_C = 2048
# Tiles of several rows cost more registers per element (every per-row scalar is held by each
# thread for each of its rows): 16 elements per thread spill on sm_90, 4 stay near 100 registers.
MULTI_ROW_ELEMENTS_PER_THREAD = 4
# A cap on rows per program, so that moderate batches still spread over all SMs.
MAX_ROWS = 64
# Narrowest column block: one 16-byte vector of float32.
MIN_BLOCK_C = 4


@dataclass(frozen=True)
class RowBlockConfig:
    """rows: rows per program; block_c: columns per tile (a power of two); single_chunk: the whole
    row fits one tile (else the kernel loops over column chunks); num_warps: for the GPU launch."""

    rows: int
    block_c: int
    single_chunk: bool
    num_warps: int


def next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def row_block_config(classes: int, max_block_c: int = MAX_BLOCK_C) -> RowBlockConfig:
    """The tile of the kd_loss and dtd_weight kernels for rows of `classes` columns.

    Rows up to max_block_c: block_c = next power of two >= classes (at least MIN_BLOCK_C); below
    ONE_ROW_BLOCK_C several rows share a program (a 2-D [rows, block_c] tile of about 4 elements
    per thread), from there on each row has its own. Longer rows: one row per program, walked in
    chunks of max_block_c columns. max_block_c (a power of two) exists so that tests can force
    the chunked path on short rows.
    """
    if classes < 1:
        raise ValueError(f"classes must be >= 1, got {classes}")
    if max_block_c < MIN_BLOCK_C or max_block_c & (max_block_c - 1):
        raise ValueError(f"max_block_c must be a power of two >= {MIN_BLOCK_C}, got {max_block_c}")
    block_c = min(max(next_power_of_two(classes), MIN_BLOCK_C), max_block_c)
    single_chunk = classes <= block_c
    if not single_chunk or block_c >= ONE_ROW_BLOCK_C:
        return RowBlockConfig(rows=1, block_c=block_c, single_chunk=single_chunk, num_warps=8)
    num_warps = 4 if block_c <= 256 else 8
    rows = MULTI_ROW_ELEMENTS_PER_THREAD * 32 * num_warps // block_c
    rows = max(1, min(MAX_ROWS, rows))
    return RowBlockConfig(rows=rows, block_c=block_c, single_chunk=True, num_warps=num_warps)
