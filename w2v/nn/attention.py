"""Multi-head self-attention through SDPA, with WavLM's gated relative position bias."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from w2v.config import Config
from w2v.nn.fast import attention as fast_attention
from w2v.nn.fast.linear import linear


def relative_position_buckets(
    length: int, num_buckets: int, max_distance: int, device=None
) -> torch.Tensor:
    """(T, T) bucket index for key j and query i, from ``rel = j - i`` (WavLM, T5-style).

    Half the buckets per sign; |rel| below a quarter of ``num_buckets`` maps
    exactly, larger distances logarithmically up to ``max_distance``.
    """
    pos = torch.arange(length, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]  # (T_q, T_k)
    half = num_buckets // 2
    max_exact = half // 2
    buckets = (rel > 0).long() * half
    dist = rel.abs()
    # clamp before log: small distances take the exact branch anyway
    log_ratio = torch.log(dist.clamp_min(1).float() / max_exact) / math.log(
        max_distance / max_exact
    )
    large = (max_exact + log_ratio * (half - max_exact)).long().clamp_max(half - 1)
    return buckets + torch.where(dist < max_exact, dist, large)


class RelativePositionBias(nn.Module):
    """WavLM's learned bias per (head, bucket), shared un-gated by every layer."""

    def __init__(self, config: Config):
        super().__init__()
        self.num_buckets = config.rel_pos_buckets
        self.max_distance = config.rel_pos_max_distance
        self.weight = nn.Parameter(torch.zeros(config.rel_pos_buckets, config.num_heads))

    def forward(self, length: int) -> torch.Tensor:
        """(heads, T, T)."""
        b = relative_position_buckets(
            length, self.num_buckets, self.max_distance, self.weight.device
        )
        return F.embedding(b, self.weight).permute(2, 0, 1)


class SelfAttention(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.dropout = 0.0  # on the attention weights, in train mode (Regularization)
        if config.rel_pos_buckets:
            # WavLM gate: a per-query, per-head scale on the shared position bias
            self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        else:
            self.gru_rel_pos_linear = None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) attention input → (B, H, T, 1) multiplier of the position bias."""
        p = self.gru_rel_pos_linear(self._split(x))  # (B, H, T, 8)
        p = p.unflatten(-1, (2, 4)).sum(-1)  # (B, H, T, 2)
        a, b = torch.sigmoid(p).chunk(2, dim=-1)
        return a * (b * self.gru_rel_pos_const - 1.0) + 2.0

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D); key_mask (B, 1, 1, T) bool, True = attend; position_bias (H, T, T)."""
        q, k, v = linear(self.q_proj, x), linear(self.k_proj, x), linear(self.v_proj, x)
        p = self.dropout if self.training else 0.0
        if position_bias is None and fast_attention.applies(q, k, p):
            lengths = fast_attention.valid_lengths(key_mask, *x.shape[:2])
            if lengths is not None:  # long sequences on a CPU: oneDNN's products
                y = fast_attention.attention(q, k, v, self.num_heads, lengths)
                return linear(self.out_proj, y)
        q, k, v = self._split(q), self._split(k), self._split(v)
        mask = key_mask
        if position_bias is not None:
            bias = (self.gate(x) * position_bias).to(q.dtype)  # (B, H, T, T)
            if key_mask is not None:
                bias = bias.masked_fill(~key_mask, torch.finfo(bias.dtype).min)
            mask = bias
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, T, hd)
        y = y.transpose(1, 2).flatten(2)  # (B, T, D)
        return linear(self.out_proj, y)
