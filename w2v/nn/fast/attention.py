"""Self-attention of long sequences through oneDNN on a CPU.

The plain form is ``F.scaled_dot_product_attention`` (attention.py). On a CPU, torch's
fp32 SDPA (its flash kernel) runs at about 180 GFLOP/s on our benchmark machine, and
torch's matrix multiply (MKL) at about 210; oneDNN's inner product, the product
:mod:`w2v.nn.fast.linear` uses, reaches 450-500. :func:`attention` computes the same
softmax(q·kᵀ/√d)·v per item and head as two oneDNN products over blocks of queries:
scores = q_block · k_hᵀ with k_h as the product's weight, softmax over the item's valid
keys, then probabilities · v_h with v_hᵀ as the weight (oneDNN needs a contiguous weight:
each item's keys and values are copied once, head-major, as (heads, n, d_h) keys with the
scale folded in and (heads, d_h, n) transposed values; one copy per item instead of one
per head is 7-15% faster at 500 frames in batches and at large's width, the same numbers).
The softmax runs in place on the scores: each row is read (its maximum) before it is
written, so the numbers are the same bit for bit, and the block, still in cache, feeds the
second product instead of a fresh 6 MB one (512 × 3000 floats): the core alone is 7-11%
faster at 3000 frames and the same at 500-1500; a whole 1 × 60 s forward pass 1.01x
(base) and 1.02x (large) (bench/RESULTS.md).
It is as fast as SDPA at 500 frames (10 s of audio) and faster from there (1.1x at 1000
frames, 1.4x at 3000; bench/RESULTS.md); below 400 frames SDPA stays.

Each item attends to its first ``length`` keys only, the valid ones, so padding costs no
products and a batched item computes what it computes alone. Taken only where it
computes what SDPA does: the conditions of :func:`w2v.nn.fast.linear.onednn_applies`,
no attention dropout, no position bias (WavLM keeps SDPA), and a key mask that is a
prefix of valid frames per item (or none).
"""

from __future__ import annotations

import math

import torch

from w2v.nn.fast.linear import onednn_applies, onednn_linear
from w2v.nn.functional import frame_mask

MIN_FRAMES = 400
"""Sequences shorter than this keep SDPA, which is faster on them."""

QUERY_BLOCK = 512
"""Queries per block: the scores of one block and head are QUERY_BLOCK × keys floats
(6 MB at 3000 keys)."""


def valid_lengths(key_mask: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
    """(B,) valid keys per item from a (B, 1, 1, T) key mask (True = attend), when the mask
    is a prefix of each item's frames; all T when there is no mask; None when the mask is
    not a prefix (so :func:`attention` does not apply)."""
    if key_mask is None:
        return torch.full((batch,), frames, dtype=torch.long)
    valid = key_mask.reshape(key_mask.shape[0], -1)
    if valid.shape != (batch, frames):
        return None
    lengths = valid.sum(-1)
    if not torch.equal(valid, frame_mask(lengths, frames)) or bool((lengths == 0).any()):
        return None
    return lengths.cpu()


def applies(q: torch.Tensor, k: torch.Tensor, dropout: float) -> bool:
    """Whether :func:`attention` computes SDPA's product here (besides the key mask and
    position bias, which the caller checks)."""
    # onednn_applies first: under export or compile the length must not be looked at
    return onednn_applies(q, k) and dropout == 0.0 and q.shape[1] >= MIN_FRAMES


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, lengths: torch.Tensor
) -> torch.Tensor:
    """Multi-head attention of (B, T, D) queries, keys and values (heads side by side
    along D) → (B, T, D), item b attending to its first ``lengths[b]`` keys."""
    b, t, d = q.shape
    hd = d // num_heads
    scale = 1.0 / math.sqrt(hd)
    out = q.new_empty(b, t, d)
    for i in range(b):
        n = int(lengths[i])
        # the products' weights, contiguous per head: (H, n, hd) scaled keys, (H, hd, n) values
        keys = (k[i, :n] * scale).view(n, num_heads, hd).transpose(0, 1).contiguous()
        values = v[i, :n].view(n, num_heads, hd).permute(1, 2, 0).contiguous()
        for h in range(num_heads):
            cols = slice(h * hd, (h + 1) * hd)
            for q0 in range(0, t, QUERY_BLOCK):
                rows = slice(q0, min(q0 + QUERY_BLOCK, t))
                scores = onednn_linear(q[i, rows, cols], keys[h], None)  # (block, n)
                torch.softmax(scores, -1, out=scores)  # in place (see the module docstring)
                out[i, rows, cols] = onednn_linear(scores, values[h], None)
    return out
