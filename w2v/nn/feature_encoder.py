"""The convolutional feature encoder: raw waveform → one 512-d frame every 20 ms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from w2v.config import Config
from w2v.nn.norm import GroupNorm, LayerNorm


class ConvLayer(nn.Module):
    """Conv1d (no padding) → optional norm → GELU.

    ``norm`` is "group" (GroupNorm over time, used on layer 0 only), "layer"
    (LayerNorm over channels per frame) or None.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: str | None
    ):
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.norm_mode = norm
        if norm == "group":
            self.layer_norm = GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = LayerNorm(c_out)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths - self.kernel, self.stride, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor, norm_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, L) → (B, C_out, L'); ``norm_lengths``: valid output frames for GroupNorm."""
        x = self.conv(x)
        if self.norm_mode == "group":
            x = self.layer_norm(x, norm_lengths)
        elif self.norm_mode == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    """Seven strided convolutions; total hop 320 samples, receptive field 400."""

    def __init__(self, config: Config):
        super().__init__()
        layers = []
        c_in = 1
        for i, (c, k, s) in enumerate(
            zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True)
        ):
            if config.conv_norm == "layer":
                norm = "layer"
            else:
                norm = "group" if i == 0 else None
            layers.append(ConvLayer(c_in, c, k, s, config.conv_bias, norm))
            c_in = c
        self.conv_layers = nn.ModuleList(layers)

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, exact: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, samples) → features (batch, channels, frames) and valid frames per item.

        ``exact``: with ``lengths``, take the GroupNorm statistics over valid
        samples only (batched output equals unbatched output). False
        reproduces the reference implementations, whose statistics include the
        padding; frame lengths are returned either way.
        """
        x = waveforms[:, None, :]  # (B, 1, S)
        out_lengths = lengths
        for layer in self.conv_layers:
            if out_lengths is not None:
                out_lengths = layer.out_lengths(out_lengths)
            x = layer(x, out_lengths if exact else None)
        return x, out_lengths
