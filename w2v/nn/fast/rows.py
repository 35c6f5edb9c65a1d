"""Row-wise layers over blocks of rows, for inputs with many rows.

A feed-forward block's intermediate activation is four times its input: for a batch of
8 × 10 s on wav2vec2-base, 49 MB per layer. Made whole, it is written to memory, read
back by GELU and again by the second product, and (above glibc's mmap threshold)
arrives as fresh pages that each cost a page fault. Computed ``ROWS`` rows at a time, it
stays in cache and its memory is reused from block to block: the feed-forward of 4000
rows runs at about 430 GFLOP/s instead of 360 on our benchmark machine
(bench/RESULTS.md). Below ``ROWS`` rows it is one block, the plain call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ROWS = 512
"""Rows per block: the wav2vec2-large intermediate of one block is 8 MiB of float32."""


def by_row_blocks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, out_features: int
) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn`` (..., in) → (..., out_features), computed on blocks
    of ``ROWS`` rows of ``x`` flattened to (rows, in). Not for autograd (blocks are
    written into one output)."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] <= ROWS:
        return fn(x)
    out = flat.new_empty(flat.shape[0], out_features)
    for r in range(0, flat.shape[0], ROWS):
        out[r : r + ROWS] = fn(flat[r : r + ROWS])
    return out.view(*x.shape[:-1], out_features)
