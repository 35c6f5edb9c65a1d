"""Distractors for the contrastive loss, as indices into the batch's flattened frames.

transformers' convention: ``out[b, t, k]`` indexes ``quantized.view(batch * frames, dim)``,
so frame ``t'`` of item ``b`` is ``b * frames + t'``. For a masked frame the ``K``
negatives are masked frames of the same item, uniformly among the others (never the frame
itself: a draw among ``n - 1`` is shifted past it, which keeps the distribution uniform);
masked frames are never padding when the mask was drawn with ``lengths``. Rows of
unmasked frames hold ``b * frames`` and are never read. The batch offset is added once,
here, from the item's own index, so negatives cannot cross utterances.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sample_negative_indices(
    shape: Sequence[int],
    num_negatives: int,
    *,
    mask_time_indices: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    cross_sample_negatives: int = 0,
) -> torch.Tensor:
    """(batch, frames, num_negatives + cross_sample_negatives) long indices (module docstring).

    ``mask_time_indices`` (batch, frames) bool: the frames to predict (default all).
    ``cross_sample_negatives`` (fairseq's option): that many more per masked frame, drawn
    among the masked frames of the whole batch other than the frame itself. An item with
    exactly one masked frame has no negative to draw: ValueError.
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (batch, frames), got {tuple(shape)!r}")
    batch, frames = (int(s) for s in shape)
    for name, k in (
        ("num_negatives", num_negatives),
        ("cross_sample_negatives", cross_sample_negatives),
    ):
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {k!r}")
    if mask_time_indices is None:
        mask = torch.ones(batch, frames, dtype=torch.bool)
    else:
        mask = torch.as_tensor(mask_time_indices).to("cpu", torch.bool)
        if mask.shape != (batch, frames):
            raise ValueError(
                f"mask_time_indices must have shape {(batch, frames)}, got {tuple(mask.shape)}"
            )
    base = torch.arange(batch)[:, None, None] * frames  # (B, 1, 1)
    out = base.expand(batch, frames, num_negatives + cross_sample_negatives).clone()
    for b in range(batch):
        where = mask[b].nonzero().flatten()  # (n,) masked frames of item b
        n = len(where)
        if n == 0 or num_negatives == 0:
            continue
        if n == 1:
            raise ValueError(
                f"item {b} has one masked frame, so no negative can be drawn for it; mask "
                "at least two frames per item (raise mask_prob or min_masks)"
            )
        out[b, where, :num_negatives] = b * frames + where[_others(n, num_negatives, generator)]
    if cross_sample_negatives:
        flat = mask.flatten().nonzero().flatten()  # (M,) masked frames of the whole batch
        m = len(flat)
        if m == 1:
            raise ValueError("the batch has one masked frame: no cross-sample negative exists")
        if m > 1:
            out.view(-1, out.shape[-1])[flat, num_negatives:] = flat[
                _others(m, cross_sample_negatives, generator)
            ]
    return out


def _others(n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, k): for each i in 0..n-1, k draws uniform over 0..n-1 except i."""
    draws = torch.randint(0, n - 1, (n, k), generator=generator)
    return draws + (draws >= torch.arange(n)[:, None]).long()
