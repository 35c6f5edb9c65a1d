"""Transformer layers (post-LN or pre-LN) and the encoder that stacks them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from w2v.config import Config
from w2v.nn.attention import RelativePositionBias, SelfAttention
from w2v.nn.fast.linear import fast, linear
from w2v.nn.fast.rows import by_row_blocks
from w2v.nn.functional import gelu_
from w2v.nn.norm import LayerNorm
from w2v.nn.positional import build_positional


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout`` in train mode with ``p > 0``; otherwise ``x`` itself, untouched (no
    call at all, so eval mode computes exactly what it did before dropout existed, and
    ``p = 0`` draws no random numbers, as in transformers)."""
    return F.dropout(x, p, True) if training and p > 0 else x


class FeedForward(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        # train-mode dropouts (Regularization): after the activation, after the output
        self.activation_dropout = 0.0
        self.hidden_dropout = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and fast(self.intermediate_dense, x) and fast(self.output_dense, x):
            # inference on a CPU: blocks of rows, the intermediate kept in cache (rows.py)
            return by_row_blocks(self._rows, x, self.output_dense.out_features)
        return self._rows(x)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """The block on rows (..., D) → (..., D); its dropouts act in train mode only."""
        h = dropout(
            gelu_(linear(self.intermediate_dense, x)), self.activation_dropout, self.training
        )
        return dropout(linear(self.output_dense, h), self.hidden_dropout, self.training)


class EncoderLayer(nn.Module):
    """Post-LN: ``x = LN1(x + attn(x)); x = LN2(x + ffn(x))``.
    Pre-LN:  ``x = x + attn(LN1(x)); x = x + ffn(LN2(x))``.
    """

    def __init__(self, config: Config):
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        self.attention = SelfAttention(config)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.hidden_dropout = 0.0  # after attention, in train mode (Regularization)

    def _attend(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, position_bias: torch.Tensor | None
    ) -> torch.Tensor:
        y = self.attention(x, key_mask, position_bias)
        return dropout(y, self.hidden_dropout, self.training)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # residual sums go into the branch outputs, fresh tensors, rather than new ones
        if self.layer_norm_first:
            x = self._attend(self.layer_norm(x), key_mask, position_bias).add_(x)
            return self.feed_forward(self.final_layer_norm(x)).add_(x)
        x = self.layer_norm(self._attend(x, key_mask, position_bias).add_(x))
        return self.final_layer_norm(self.feed_forward(x).add_(x))


class Encoder(nn.Module):
    """Positional conv, the encoder LayerNorm and the transformer layers.

    The LayerNorm sits before layer 1 for post-LN models and after the last
    layer for pre-LN ones; :meth:`finish` applies it in the pre-LN case.
    """

    def __init__(self, config: Config):
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        self.pos_conv_embed = build_positional(config)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rel_attn_embed = RelativePositionBias(config) if config.rel_pos_buckets else None
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.hidden_dropout = 0.0  # on the transformer input, in train mode (Regularization)

    def embed(
        self, x: torch.Tensor, valid: torch.Tensor | None, exact: bool = True
    ) -> torch.Tensor:
        """Projected features (B, T, D) → input of layer 1 (B, T, D); ``valid`` (B, T) bool,
        True on each item's valid frames. ``exact``: also re-zero the padding inside the
        positional conv (after a BatchNorm, after each block of a stack), so that batched
        output equals each item's output alone (False: the reference implementations'
        batched numbers)."""
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)
        xt = x.transpose(1, 2)  # (B, D, T)
        rezero = valid[:, None, :].to(x.dtype) if (exact and valid is not None) else None
        x = x + self.pos_conv_embed(xt, rezero).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        return dropout(x, self.hidden_dropout, self.training)

    def position_bias(self, length: int) -> torch.Tensor | None:
        return None if self.rel_attn_embed is None else self.rel_attn_embed(length)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last layer → model output."""
        return self.layer_norm(x) if self.layer_norm_first else x
