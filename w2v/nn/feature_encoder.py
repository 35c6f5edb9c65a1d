"""The convolutional feature encoder: raw waveform → one C-dim frame every 20 ms.

wav2vec 2.0's encoder f: X → Z is a stack of temporal convolutions without
padding, each followed by a norm and GELU (seven layers, 512 channels, total
hop 320 samples, receptive field 400 in every released model)::

    waveform (B, S) → (B, 1, S) → [Conv1d → norm → GELU] × 7 → (B, C, T) → (B, T, C)

The norm is set by ``Config.conv_norm``: "group" models normalise layer 0's
output with GroupNorm(C, C), each channel over time (given lengths, by default
over each item's valid frames only); "layer" models normalise every layer's output with a
LayerNorm over channels, frame by frame. Layer 0 computes in float32 from the
waveform whatever the model's dtype; the features come out in the model's dtype.

:class:`ConvLayer` and :meth:`FeatureEncoder.plain` are that computation as
written. :meth:`FeatureEncoder.forward` is the one place that hands it instead to
the fast form (:mod:`w2v.nn.fast`), which computes the same features time-major
as matrix products, whenever that form applies.
"""

from __future__ import annotations

import torch
from torch import nn

from w2v.config import Config
from w2v.nn import fast
from w2v.nn.functional import gelu_
from w2v.nn.norm import GroupNorm, LayerNorm


class ConvLayer(nn.Module):
    """Conv1d (no padding) → norm → GELU, channel-major: (B, C_in, T) → (B, C_out, T').

    ``norm``: "group" (GroupNorm(C, C), each channel over time), "layer"
    (LayerNorm over channels, each frame) or None. Parameters keep the
    checkpoints' names and layout: ``conv.weight`` (C_out, C_in, kernel),
    ``conv.bias``, ``layer_norm.weight`` and ``layer_norm.bias``.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: str | None
    ):
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.layer_norm: GroupNorm | LayerNorm | None = None
        if norm == "group":
            self.layer_norm = GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = LayerNorm(c_out)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input frames → (B,) output frames."""
        return torch.div(lengths - self.kernel, self.stride, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor, norm_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, T) → (B, C_out, T'). ``norm_lengths`` (B,): each item's valid output
        frames, over which GroupNorm takes its statistics (None: all frames)."""
        # in the parameters' dtype: layer 0 of a half-precision model keeps float32 ones
        x = self.conv(x.to(self.conv.weight.dtype))
        if isinstance(self.layer_norm, GroupNorm):
            x = self.layer_norm(x, norm_lengths)
        elif self.layer_norm is not None:
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)  # over channels
        return gelu_(x)


class FeatureEncoder(nn.Module):
    """The conv stack of ``config``: ``conv_layers`` (``feature_extractor.conv_layers``)."""

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

    @property
    def dtype(self) -> torch.dtype:
        """The features' dtype, the model's (layer 0 keeps float32 parameters in a half
        model, w2v.loading.to)."""
        layers = self.conv_layers
        return layers[1 if len(layers) > 1 else 0].conv.weight.dtype

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, exact: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, samples) → features (batch, frames, channels) and valid frames per item.

        ``exact``: with ``lengths``, take the GroupNorm statistics over valid
        samples only (batched output equals unbatched output). False
        reproduces the reference implementations, whose statistics include the
        padding; frame lengths are returned either way. The waveform may be in
        any floating dtype; the features come out in the model's dtype.
        """
        first, rest = self.conv_layers[0], self.conv_layers[1:]
        out_lengths = None if lengths is None else first.out_lengths(lengths)
        norm_lengths = out_lengths if exact else None
        # the one dispatch to the fast form, which serves eval mode only
        if not self.training and fast.applies(waveforms, self.dtype):
            stack = [(layer.conv, layer.layer_norm) for layer in self.conv_layers]
            x = fast.forward(stack, waveforms, norm_lengths, self.dtype)
        else:
            x = self.plain(waveforms, norm_lengths)
        if out_lengths is not None:
            for layer in rest:
                out_lengths = layer.out_lengths(out_lengths)
        return x, out_lengths

    def plain(
        self, waveforms: torch.Tensor, norm_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, S) waveform → (B, T, C) features, layer by layer as written above.

        ``norm_lengths`` (B,): valid frames of layer 0's output, over which
        GroupNorm takes its statistics (None: all frames). This is the form
        traced by torch.export, and the reference the fast form is tested against.
        """
        first, rest = self.conv_layers[0], self.conv_layers[1:]
        x = first(waveforms.float()[:, None], norm_lengths).to(self.dtype)  # (B, C, T0)
        for layer in rest:
            x = layer(x)  # (B, C, T_i)
        return x.transpose(1, 2)


class _GradMultiply(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, its gradient scaled by ``scale`` (fairseq's ``feature_grad_mult``:
    0.1 in wav2vec 2.0 pretraining keeps the conv encoder's updates small; 0 detaches)."""
    if scale == 1.0 or not x.requires_grad:
        return x
    if scale == 0.0:
        return x.detach()
    return _GradMultiply.apply(x, scale)
