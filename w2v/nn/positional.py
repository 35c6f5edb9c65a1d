"""Convolutional relative positional embedding, added once before the transformer layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from w2v.config import Config
from w2v.nn.fast import fft_conv
from w2v.nn.fast.derived import cached
from w2v.nn.functional import channels_last_applies, channels_last_weight, gelu_, grouped_conv1d
from w2v.nn.norm import LayerNorm


class WeightNormConv(nn.Module):
    """Grouped Conv1d whose weight is ``g * v / ||v||`` with the norm over dims (0, 1) per tap.

    ``weight_g`` (1, 1, K) and ``weight_v`` (D, D/groups, K) are stored as in
    checkpoints; ``torch._weight_norm(v, g, dim=2)`` matches the reference bit for bit.
    Where :func:`w2v.nn.fast.fft_conv.applies` (CPU fp32 inference) it runs through the
    FFT.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.groups = groups
        self.padding = kernel // 2
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(dim))
        if self.weight_v.device.type != "meta":  # meta kernels for these ops pull in torch._dynamo
            nn.init.normal_(self.weight_v, std=(4.0 / (kernel * dim)) ** 0.5)
            with torch.no_grad():
                self.weight_g.copy_(
                    torch.linalg.vector_norm(self.weight_v, dim=(0, 1), keepdim=True)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fft_conv.applies(x, self.weight_v):
            sources = (self.weight_v, self.weight_g)
            kernel = self.weight_v.shape[-1]
            return fft_conv.conv1d_kept(
                self, x, self.normed_weight, sources, self.bias, kernel, self.padding, self.groups
            )
        channels_last = channels_last_applies(x)

        def make() -> torch.Tensor:
            weight = self.normed_weight()
            return channels_last_weight(weight) if channels_last else weight

        weight = cached(self, channels_last, make, self.weight_v, self.weight_g)
        return grouped_conv1d(x, weight, self.bias, self.padding, self.groups)

    def normed_weight(self) -> torch.Tensor:
        """The convolution's weight, ``g * v / ||v||``."""
        return torch._weight_norm(self.weight_v, self.weight_g, 2)


class GroupedConv1d(nn.Conv1d):
    """A plain-weight grouped positional conv ("same" padding) run by :func:`grouped_conv1d`,
    or where :func:`w2v.nn.fast.fft_conv.applies` (a long kernel, CPU fp32 inference)
    through the FFT."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__(dim, dim, kernel, padding=kernel // 2, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fft_conv.applies(x, self.weight):
            (kernel,), (padding,) = self.kernel_size, self.padding
            return fft_conv.conv1d_kept(
                self,
                x,
                lambda: self.weight,
                (self.weight,),
                self.bias,
                kernel,
                padding,
                self.groups,
            )
        weight = self.weight
        if channels_last_applies(x):
            weight = cached(self, True, lambda: channels_last_weight(self.weight), self.weight)
        return grouped_conv1d(x, weight, self.bias, self.padding[0], self.groups)


class PositionalConv(nn.Module):
    """wav2vec2 / HuBERT / WavLM: [BatchNorm →] grouped conv → drop last frame if K even → GELU.

    With ``batch_norm`` (HuBERT ``conv_pos_batch_norm``) the conv has a plain
    weight; otherwise it is weight-normed.
    """

    def __init__(self, config: Config, batch_norm: bool):
        super().__init__()
        d, k, g = config.hidden_size, config.pos_conv_kernel, config.pos_conv_groups
        self.drop_last = k % 2 == 0
        if batch_norm:
            self.batch_norm = nn.BatchNorm1d(d)
            self.conv = GroupedConv1d(d, k, g)
        else:
            self.batch_norm = None
            self.conv = WeightNormConv(d, k, g)

    def forward(self, x: torch.Tensor, rezero: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D, T) → (B, D, T). ``rezero`` (B, 1, T), 1 on valid frames and 0 on padding:
        re-zero the padding after the BatchNorm."""
        if self.batch_norm is not None:
            x = self.batch_norm(x.float()).to(x.dtype)  # fp32 statistics, like the other norms
            if rezero is not None:
                # BN(0) != 0: zero the padding again so it acts like the conv's own zero padding
                x = x * rezero
        x = self.conv(x)
        if self.drop_last:
            x = x[..., :-1]
        return gelu_(x)


class StackBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.drop_last = kernel % 2 == 0
        self.conv = GroupedConv1d(dim, kernel, groups)
        self.layer_norm = LayerNorm(dim, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.drop_last:
            x = x[..., :-1]
        x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class StackPositionalConv(nn.Module):
    """data2vec-audio: ``pos_conv_depth`` blocks of conv → LayerNorm (no affine) → GELU."""

    def __init__(self, config: Config):
        super().__init__()
        self.layers = nn.ModuleList(
            StackBlock(config.hidden_size, config.pos_conv_kernel, config.pos_conv_groups)
            for _ in range(config.pos_conv_depth)
        )

    def forward(self, x: torch.Tensor, rezero: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D, T) → (B, D, T). ``rezero`` (B, 1, T), 1 on valid frames and 0 on padding:
        re-zero the padding after every block.

        The reference zeroes padding once, before the stack, so padding leaks
        into the last valid frames of a batched item; re-zeroing after each
        block makes batched output equal unbatched output.
        """
        for layer in self.layers:
            x = layer(x)
            if rezero is not None:
                x = x * rezero
        return x


def build_positional(config: Config) -> nn.Module:
    if config.pos_conv == "stack":
        return StackPositionalConv(config)
    return PositionalConv(config, batch_norm=config.pos_conv == "batch_norm")
