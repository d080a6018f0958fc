"""Launch shapes of the row kernels, chosen from the number of classes alone.

One configuration per class count, no autotuning: the kernels are bandwidth bound, the choice
below keeps every program's tile at a few thousand elements, and autotuning with several configs
does not run under TRITON_INTERPRET=1 anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

# Widest column block held in registers. A row up to this long is read once and kept in
# registers for the gradient; longer rows are walked in chunks of this width, twice.
MAX_BLOCK_C = 4096
# Elements per program for short rows: rows are stacked until the tile holds about this many.
TILE_ELEMENTS = 4096
# Enough rows per program to amortise the per-row scalar work, few enough to leave programs for
# all SMs at moderate batch sizes.
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

    Short rows: block_c = next power of two >= classes, and several rows per program (a 2-D
    [rows, block_c] tile of about TILE_ELEMENTS). Rows longer than max_block_c: one row per
    program, walked in chunks of max_block_c columns. max_block_c (a power of two) exists so that
    tests can force the chunked path on small rows.
    """
    if classes < 1:
        raise ValueError(f"classes must be >= 1, got {classes}")
    if max_block_c < MIN_BLOCK_C or max_block_c & (max_block_c - 1):
        raise ValueError(f"max_block_c must be a power of two >= {MIN_BLOCK_C}, got {max_block_c}")
    block_c = min(max(next_power_of_two(classes), MIN_BLOCK_C), max_block_c)
    single_chunk = classes <= block_c
    rows = max(1, min(MAX_ROWS, TILE_ELEMENTS // block_c)) if single_chunk else 1
    tile = rows * block_c
    num_warps = 8 if tile >= 4096 else (4 if tile >= 1024 else 2)
    return RowBlockConfig(rows=rows, block_c=block_c, single_chunk=single_chunk, num_warps=num_warps)
