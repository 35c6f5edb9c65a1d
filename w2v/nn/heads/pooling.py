"""What the heads share: the learned weighted sum of layers, and pooling over valid frames.

Every pooling here reads frames ``0 .. frame_lengths[b] - 1`` of item ``b`` and nothing
else, so a padded batch item pools exactly like the item alone. ``frame_lengths=None``
means every frame is valid. Statistics are computed in float32 and returned in the
input's dtype (the heads' linear layers run in the model's dtype).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from w2v.nn.functional import frame_mask


def weighted_layer_sum(states: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """``sum_i softmax(weights)_i * states[i]``: hidden states 0..N, each (batch, frames, dim),
    and ``weights`` (N + 1,) → (batch, frames, dim)."""
    w = torch.softmax(weights.float(), dim=-1).to(states[0].dtype)
    return (torch.stack(list(states), dim=1) * w.view(-1, 1, 1)).sum(dim=1)  # (B, L, T, D) → sum


def _valid(x: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
    """(batch, frames, 1) bool, True on valid frames."""
    if frame_lengths is None:
        return torch.ones(x.shape[0], x.shape[1], 1, dtype=torch.bool, device=x.device)
    return frame_mask(frame_lengths.to(x.device), x.shape[1]).unsqueeze(-1)


def _count(x: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
    """(batch, 1) float32 valid frames per item."""
    if frame_lengths is None:
        return torch.full((x.shape[0], 1), float(x.shape[1]), device=x.device)
    return frame_lengths.to(x.device, torch.float32)[:, None]


def masked_sum(x: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
    """(batch, frames, dim) → (batch, dim): the sum over valid frames."""
    return torch.where(_valid(x, frame_lengths), x.float(), 0.0).sum(1).to(x.dtype)


def masked_mean(x: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
    """(batch, frames, dim) → (batch, dim): the mean over valid frames."""
    total = torch.where(_valid(x, frame_lengths), x.float(), 0.0).sum(1)
    return (total / _count(x, frame_lengths)).to(x.dtype)


def masked_max(x: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
    """(batch, frames, dim) → (batch, dim): the maximum over valid frames."""
    return torch.where(_valid(x, frame_lengths), x, -torch.inf).amax(1)


def masked_mean_std(
    x: torch.Tensor, frame_lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, frames, dim) → mean and *sample* standard deviation (divide by count - 1, as
    x-vector statistics pooling does), each (batch, dim), over valid frames. Items need at
    least two valid frames (one gives NaN)."""
    valid = _valid(x, frame_lengths)
    count = _count(x, frame_lengths)
    xf = x.float()
    mean = torch.where(valid, xf, 0.0).sum(1) / count
    centred = torch.where(valid, xf - mean[:, None, :], 0.0)  # two passes: no E[x²] - E[x]²
    std = (centred.square().sum(1) / (count - 1)).sqrt()
    return mean.to(x.dtype), std.to(x.dtype)
