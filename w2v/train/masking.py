"""Span masks over frames: which frames the model must predict (pretraining) or loses to
SpecAugment (fine-tuning), drawn from a ``torch.Generator`` (no global numpy state).

Two schemes, each as its reference computes it, with ``lengths`` the valid frames of each
right-padded item (padding is never masked):

* ``style="hf"`` (transformers' ``_compute_mask_indices``): one uniform ``eps`` per call;
  an item of ``n`` valid frames gets ``k = max(min_masks, int(mask_prob * n / L + eps))``
  spans of ``L = mask_length`` frames (capped so that they fit), whose starts are ``k``
  distinct positions among the ``n - L + 1`` where a span fits. Spans overlap, so the
  masked fraction is below ``mask_prob``: :func:`expected_mask_fraction` gives it
  (``mask_prob=0.65, mask_length=10``: about 0.49). transformers marks the last frame of
  an item that gets no span (a padding frame); w2v does not.
* ``style="fairseq"`` (fairseq's ``compute_mask_indices``, ``mask_type="static"``): ``eps``
  drawn per item, starts among ``n - L`` positions (a span never reaches the last frame),
  and, as fairseq's ``require_same_masks``, every item then keeps as many masked frames
  as the item with the fewest (a random subset), so that targets stack into one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

STYLES = ("hf", "fairseq")


def _check(shape: Sequence[int], mask_prob: float, mask_length: int, min_masks: int) -> None:
    if len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
        raise ValueError(f"shape must be (batch, frames), got {tuple(shape)!r}")
    if isinstance(mask_prob, bool) or not 0 <= mask_prob <= 1:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob!r}")
    if isinstance(mask_length, bool) or not isinstance(mask_length, int) or mask_length < 1:
        raise ValueError(f"mask_length must be a positive integer, got {mask_length!r}")
    if mask_length > shape[1]:
        raise ValueError(f"mask_length {mask_length} is longer than the {shape[1]} frames")
    if isinstance(min_masks, bool) or not isinstance(min_masks, int) or min_masks < 0:
        raise ValueError(f"min_masks must be an integer >= 0, got {min_masks!r}")


def _lengths(lengths: torch.Tensor | Sequence[int] | None, batch: int, frames: int) -> list[int]:
    if lengths is None:
        return [frames] * batch
    out = [int(n) for n in torch.as_tensor(lengths).flatten().tolist()]
    if len(out) != batch or any(not 0 <= n <= frames for n in out):
        raise ValueError(f"lengths must be {batch} frame counts in 0..{frames}, got {out}")
    return out


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _starts(positions: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """``k`` distinct span starts among ``positions``, uniformly (without replacement)."""
    return torch.randperm(positions, generator=generator)[:k]


def hf_num_spans(
    n: int, frames: int, mask_prob: float, mask_length: int, min_masks: int, eps: float
) -> int:
    """Spans transformers' scheme gives an item of ``n`` valid frames out of ``frames``."""
    return _hf_cap(int(mask_prob * n / mask_length + eps), n, frames, mask_length, min_masks)


def _hf_cap(k: int, n: int, frames: int, mask_length: int, min_masks: int) -> int:
    k = max(k, min_masks)
    if k * mask_length > frames:
        k = frames // mask_length
    return max(min(k, n - (mask_length - 1)), 0)


def compute_mask_indices(
    shape: Sequence[int],
    mask_prob: float,
    mask_length: int,
    *,
    lengths: torch.Tensor | Sequence[int] | None = None,
    min_masks: int = 0,
    generator: torch.Generator | None = None,
    style: str = "hf",
) -> torch.Tensor:
    """(batch, frames) bool, True on masked frames; see the module docstring for the two
    ``style`` schemes. ``lengths`` (batch,): valid frames per item (default all)."""
    _check(shape, mask_prob, mask_length, min_masks)
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    batch, frames = shape
    sizes = _lengths(lengths, batch, frames)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    offsets = torch.arange(mask_length)
    if style == "hf":
        eps = _uniform(generator)
        if hf_num_spans(frames, frames, mask_prob, mask_length, min_masks, eps) == 0:
            return mask
        for b, n in enumerate(sizes):
            k = hf_num_spans(n, frames, mask_prob, mask_length, min_masks, eps)
            starts = _starts(n - (mask_length - 1), k, generator) if k else offsets[:0]
            mask[b, (starts[:, None] + offsets).flatten()] = True
        return mask
    # fairseq: spans per item, then every item trimmed to the fewest masked frames
    _uniform(generator)  # fairseq draws the unpadded batch's count first, used or not
    chosen = []
    for n in sizes:
        k = max(min_masks, int(mask_prob * n / mask_length + _uniform(generator)))
        span = mask_length
        if n - span <= k:
            span = n - k - 1
        if k <= 0 or n - span <= 0 or span < 0:
            chosen.append(offsets[:0])
            continue
        starts = _starts(n - span, k, generator)
        idx = torch.unique(starts[:, None] + offsets)
        chosen.append(idx[idx < n])
    fewest = min(len(c) for c in chosen)
    for b, idx in enumerate(chosen):
        if len(idx) > fewest:
            idx = idx[torch.randperm(len(idx), generator=generator)[:fewest]]
        mask[b, idx] = True
    return mask


def expected_mask_fraction(
    frames: int, mask_prob: float, mask_length: int, *, min_masks: int = 0, style: str = "hf"
) -> float:
    """The expected fraction of an unpadded item's ``frames`` frames that
    :func:`compute_mask_indices` masks (fairseq: one item, before the batch's trimming).

    With ``N`` possible starts and ``k`` spans drawn without replacement, frame ``t`` stays
    unmasked when none of the ``w_t`` starts whose span covers it is drawn:
    ``C(N - w_t, k) / C(N, k)``; ``k`` is ``floor(x)`` or ``floor(x) + 1`` for
    ``x = mask_prob * frames / mask_length``, the latter with probability ``frac(x)``.
    For ``mask_prob=0.65, mask_length=10`` and long items this tends to
    ``1 - (1 - 0.065)^10 ≈ 0.49``.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    x = mask_prob * frames / mask_length
    total = 0.0
    low = math.floor(x)
    for k0, weight in ((low, 1 - (x - low)), (low + 1, x - low)):
        if weight == 0:
            continue
        if style == "hf":
            k = _hf_cap(k0, frames, frames, mask_length, min_masks)
            positions = frames - mask_length + 1
        else:
            k = max(k0, min_masks)
            positions = frames - (mask_length if frames - mask_length > k else k + 1)
        covered = 0.0
        for t in range(frames):
            w = min(t, positions - 1) - max(0, t - mask_length + 1) + 1  # starts covering t
            covered += 1 - _none_drawn(positions, max(w, 0), k)
        total += weight * covered / frames
    return total


def _none_drawn(n: int, w: int, k: int) -> float:
    """C(n - w, k) / C(n, k): the chance that ``k`` draws without replacement from ``n``
    miss ``w`` given items."""
    if k > n - w:
        return 0.0
    p = 1.0
    for j in range(k):
        p *= (n - w - j) / (n - j)
    return p


def spec_augment(
    frames: Sequence[int],
    hidden_size: int,
    *,
    mask_time_prob: float = 0.05,
    mask_time_length: int = 10,
    mask_time_min_masks: int = 2,
    mask_feature_prob: float = 0.0,
    mask_feature_length: int = 10,
    mask_feature_min_masks: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """SpecAugment for fine-tuning with transformers' names and defaults
    (``Wav2Vec2Config.mask_time_*`` / ``mask_feature_*``): ``(time_mask (batch, frames),
    feature_mask (batch, hidden_size))`` for items of ``frames`` valid frames each, None for
    a kind whose probability is 0. Pass them to :meth:`w2v.nn.model.Model.encode` (or
    :func:`w2v.train.ctc_loss`): masked frames take the mask embedding, masked channels 0.
    """
    batch, longest = len(frames), max(frames)
    time_mask = feature_mask = None
    if mask_time_prob > 0:
        time_mask = compute_mask_indices(
            (batch, longest), mask_time_prob, mask_time_length, lengths=list(frames),
            min_masks=mask_time_min_masks, generator=generator,
        )  # fmt: skip
    if mask_feature_prob > 0:
        feature_mask = compute_mask_indices(
            (batch, hidden_size), mask_feature_prob, mask_feature_length,
            min_masks=mask_feature_min_masks, generator=generator,
        )  # fmt: skip
    return time_mask, feature_mask
