"""Pool frame embeddings over each item's valid frames only.

Outputs at padded frames are finite garbage (the model masks padded keys but
still computes those rows), so every pooling here looks at frames
``0 .. frame_lengths[b] - 1`` of item ``b`` and nothing else.

Modes:

* ``"mean"``: the mean over valid frames, ``(dim,)`` per layer;
* ``"stats"``: the mean and the standard deviation over valid frames
  concatenated, ``(2 * dim,)`` per layer; the *population* standard deviation
  (divide by the frame count), so a one-frame item has std 0, not NaN;
* ``"none"``: the valid frames themselves, ``(frames, dim)`` per layer.

Frame ``t`` covers input samples ``[320 t, 320 t + 400)`` at 16 kHz: a 25 ms
window every 20 ms (``config.hop_length`` / ``config.receptive_field``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from w2v.nn.functional import frame_mask

POOLS = ("mean", "stats", "none")


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    return pool


def masked_mean(states: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """``states (batch, frames, dim)`` → ``(batch, dim)`` mean over valid frames, in float32."""
    x = states.float()
    mask = frame_mask(frame_lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
    count = frame_lengths.clamp(min=1).to(x.dtype)[:, None]  # (B, 1)
    return torch.where(mask, x, 0.0).sum(1) / count


def masked_stats(states: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, frames, dim)`` → ``(batch, 2 * dim)``: mean then population std over valid frames."""
    x = states.float()
    mask = frame_mask(frame_lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
    count = frame_lengths.clamp(min=1).to(x.dtype)[:, None]  # (B, 1)
    mean = torch.where(mask, x, 0.0).sum(1) / count
    centred = torch.where(
        mask, x - mean[:, None, :], 0.0
    )  # two-pass: no E[x²] - E[x]² cancellation
    std = (centred.square().sum(1) / count).sqrt()
    return torch.cat([mean, std], dim=-1)


def pool_layers(
    states: Sequence[torch.Tensor], frame_lengths: torch.Tensor, pool: str
) -> list[np.ndarray]:
    """Pool each layer and regroup per item.

    ``states``: one ``(batch, frames, dim)`` tensor per layer; ``frame_lengths``
    ``(batch,)`` valid frames per item. Returns, per item, a float32 array of
    shape ``(layers, dim)`` (``mean``), ``(layers, 2 * dim)`` (``stats``) or
    ``(layers, frames_b, dim)`` (``none``).
    """
    check_pool(pool)
    lengths = frame_lengths.to(states[0].device)
    if pool == "none":
        per_layer = torch.stack([s.float() for s in states], dim=1)  # (B, L, T, D)
        host = per_layer.cpu().numpy()
        return [np.ascontiguousarray(host[b, :, : int(n)]) for b, n in enumerate(lengths.tolist())]
    fn = masked_mean if pool == "mean" else masked_stats
    pooled = torch.stack([fn(s, lengths) for s in states], dim=1)  # (B, L, D')
    host = pooled.cpu().numpy()
    return [np.ascontiguousarray(host[b]) for b in range(host.shape[0])]


class RunningPool:
    """Pools per layer over frames that arrive in consecutive pieces (chunked long audio).

    Gives what :func:`pool_layers` gives for the whole sequence at once; mean and
    standard deviation are merged piecewise in float64 (Chan et al.), so memory
    stays constant for ``mean`` and ``stats``.
    """

    def __init__(self, pool: str) -> None:
        self.pool = check_pool(pool)
        self.frames = 0
        self._pieces: list[np.ndarray] = []
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, states: Sequence[torch.Tensor]) -> None:
        """``states``: one ``(frames, dim)`` tensor per layer for the next stretch of frames."""
        x = torch.stack([s.double() for s in states])  # (L, n, D)
        n = x.shape[1]
        if self.pool == "none":
            self._pieces.append(x.float().cpu().numpy())
        else:
            mean = x.mean(1)
            m2 = (x - mean[:, None]).square().sum(1)
            if self._mean is None:
                self._mean, self._m2 = mean, m2
            else:
                total = self.frames + n
                delta = mean - self._mean
                self._mean = self._mean + delta * (n / total)
                self._m2 = self._m2 + m2 + delta.square() * (self.frames * n / total)
        self.frames += n

    def result(self) -> np.ndarray:
        """``(layers, dim)``, ``(layers, 2 * dim)`` or ``(layers, frames, dim)``, float32."""
        if self.pool == "none":
            return np.ascontiguousarray(np.concatenate(self._pieces, axis=1))
        out = self._mean
        if self.pool == "stats":
            out = torch.cat([self._mean, (self._m2 / max(self.frames, 1)).sqrt()], dim=-1)
        return np.ascontiguousarray(out.float().cpu().numpy())
