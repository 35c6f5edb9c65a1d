"""A learned weighted sum over layers, aware of padding: s3prl's featurizer and
transformers' ``use_weighted_layer_sum`` as one small module for users' own heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from w2v.nn.functional import frame_mask


class WeightedLayerSum(nn.Module):
    """``sum_l softmax(w)_l * x_l`` over layers, ``w`` zero-initialised (equal weights).

    ``layer_norm``: normalise each layer over its feature axis first (no affine
    parameters), as s3prl's featurizer optionally does; transformers' weighted layer sum
    has no such step. Works on frames ``(B, T, D)`` per layer, with ``lengths`` (B,)
    marking the valid frames, and on pooled vectors ``(B, D)`` per layer.
    """

    def __init__(self, num_layers: int, layer_norm: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        self.eps = eps
        self.weights = nn.Parameter(torch.zeros(num_layers))

    @property
    def normalized_weights(self) -> torch.Tensor:
        """(L,) the softmax of the weights: each layer's share of the sum."""
        return F.softmax(self.weights, dim=-1)

    def forward(
        self, layers: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``layers``: (L, B, T, D) or (L, B, D) stacked, or a sequence of L such tensors
        (no stacked copy is made). Returns the weighted sum (B, T, D) or (B, D) and
        ``lengths``; with ``lengths``, frames past an item's length are zero."""
        if len(layers) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} layers, got {len(layers)}")
        w = self.normalized_weights
        out = None
        for i in range(self.num_layers):
            x = layers[i]
            if self.layer_norm:
                x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
            term = w[i].to(x.dtype) * x
            out = term if out is None else out + term
        if lengths is not None:
            if out.dim() != 3:
                raise ValueError("lengths apply to frames (B, T, D); pooled input has none")
            # padded frames hold garbage (even NaN after a layer norm of zeros in half
            # precision); fill rather than multiply, so no sum or mean can see them
            out = out.masked_fill(~frame_mask(lengths, out.shape[1])[..., None], 0.0)
        return out, lengths

    def pool(
        self, layers: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, D): the weighted sum's mean over each item's valid frames (all frames when
        ``lengths`` is None)."""
        out, _ = self.forward(layers, lengths)
        if lengths is None:
            return out.mean(dim=1)
        count = lengths.clamp(min=1).to(out.dtype)[:, None]
        return out.sum(dim=1) / count
