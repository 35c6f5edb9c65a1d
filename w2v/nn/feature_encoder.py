"""The convolutional feature encoder: raw waveform → one 512-d frame every 20 ms.

Activations stay time-major, (batch, frames, channels), from the waveform to
the feature projection, and every convolution is computed as matrix products
over views of its input:

* layer 0 (one input channel) unfolds the waveform into (frames, kernel)
  windows, a small copy, and multiplies them by the (kernel, channels) weight.
  With GroupNorm the per-channel statistics follow exactly from the windows'
  mean and (kernel × kernel) covariance, so the norm is folded into that one
  product: the largest activation of the model is written once, then GELU runs
  in place. Layer 0 always computes in float32 (0.3 GFLOP per 10 s) and hands
  the next layer the model's dtype.
* layers with stride s ≥ 1 split the kernel into blocks of s taps. A block
  of s consecutive frames of C channels is s·C contiguous numbers, so block j
  is a (frames, s·C) view of the input with no copy; the output is the sum of
  one product per block (two for kernel 3 / stride 2, one for kernel 2).

This replaces the conv → transpose → norm → transpose round trips of a
channel-major layout, which on CPU cost more than the convolutions' FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from w2v.config import Config
from w2v.nn.functional import gelu_
from w2v.nn.norm import GroupNorm, LayerNorm, valid_frames

_LAYER0_BLOCK_FRAMES = 16384
"""Frames (summed over the batch) per fp32 block of layer 0 in half-precision models:
32 MiB at 512 channels."""


def _cudnn_tf32(waveforms: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether an fp32 model on a GPU should run its convolutions through cuDNN.

    PyTorch lets cuDNN convolutions use TF32 by default
    (``torch.backends.cudnn.allow_tf32``), as every ``nn.Conv1d`` does, transformers'
    too; the product form's matmuls follow the stricter matmul setting. So with
    cuDNN TF32 on, the plain conv path is used (2.5x faster for wav2vec2-base on an
    H100, bench/gpu_variants.py); with it off, the product form, which is as fast
    as cuDNN in true fp32.
    """
    return (
        waveforms.is_cuda
        and dtype == torch.float32
        and torch.backends.cudnn.enabled
        and torch.backends.cudnn.allow_tf32
    )


class ConvLayer(nn.Module):
    """Conv1d (no padding) → optional norm → GELU, on time-major (B, T, C) activations.

    ``norm`` is "group" (GroupNorm(C, C) over time, layer 0 only), "layer"
    (LayerNorm over channels per frame) or None. The parameters keep the
    reference layout: ``conv.weight`` is (C_out, C_in, kernel).
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

    def out_frames(self, frames: int) -> int:
        return (frames - self.kernel) // self.stride + 1

    # ---------------------------------------------------------------- layer 0
    def forward_waveform(
        self, waveforms: torch.Tensor, norm_lengths: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """(B, S) waveform → (B, T, C) in ``dtype``; computed in float32.

        ``norm_lengths``: valid output frames per item, over which the GroupNorm
        statistics are taken (None: all frames).
        """
        if self.conv.in_channels != 1:
            raise ValueError("forward_waveform is for the first layer (one input channel)")
        windows = waveforms.float().unfold(-1, self.kernel, self.stride)  # (B, T, k) view
        weight = self.conv.weight.float()[:, 0]  # (C, k)
        b, t, _ = windows.shape
        if self.norm_mode == "group":
            w_eff, shift = self._group_norm_folded(windows, weight, norm_lengths)
        else:
            w_eff = weight.T.expand(b, -1, -1)  # (B, k, C)
            shift = (
                windows.new_zeros(1, 1, 1)
                if self.conv.bias is None
                else self.conv.bias.float()[None, None]
            )

        def block(w: torch.Tensor) -> torch.Tensor:  # (B, t, k) windows → (B, t, C), fp32
            x = torch.baddbmm(shift, w, w_eff)
            if self.norm_mode == "layer":
                x = self.layer_norm(x)
            return gelu_(x)

        if dtype == torch.float32 or torch.compiler.is_compiling():
            return block(windows).to(dtype)
        # half models: fp32 blocks of time written into the half output, so the fp32
        # version of the model's largest activation never exists whole
        out = windows.new_empty(b, t, weight.shape[0], dtype=dtype)
        step = max(1, _LAYER0_BLOCK_FRAMES // b)
        for t0 in range(0, t, step):
            out[:, t0 : t0 + step] = block(windows[:, t0 : t0 + step])
        return out

    def _group_norm_folded(
        self, windows: torch.Tensor, weight: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GroupNorm(conv(x)) as one product: y = windows @ (W·scale)ᵀ + shift.

        Returns the per-item weight (B, k, C) and shift (B, 1, C).

        Channel c of the conv output is w_c·f_t (+ b_c, which the mean removes),
        so its mean over valid frames is w_c·mean(f) and its variance
        w_cᵀ·cov(f)·w_c. The statistics of the (T, k) windows are taken in
        float64 (tiny), which makes the result at least as accurate as
        normalising the materialised conv output in float32.
        """
        f = windows.double()
        if lengths is None:
            mask = f.new_ones(f.shape[0], f.shape[1], 1)
        else:
            mask = valid_frames(f.shape[1], lengths, f.dtype)  # (B, T, 1)
        count = mask.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
        mean = (f * mask).sum(1, keepdim=True) / count  # (B, 1, k)
        centred = (f - mean) * mask
        cov = centred.transpose(1, 2) @ centred / count  # (B, k, k)
        w = weight.double()  # (C, k)
        var = ((w @ cov) * w).sum(-1)  # (B, C)
        gn = self.layer_norm
        scale = torch.rsqrt(var + gn.eps) * gn.weight.double()  # (B, C)
        shift = gn.bias.double() - (mean[:, 0] @ w.T) * scale  # (B, C)
        w_eff = (w * scale[..., None]).transpose(1, 2).float()  # (B, k, C)
        return w_eff, shift[:, None].float()

    # ---------------------------------------------------------------- layers ≥ 1
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in) contiguous → (B, T', C_out)."""
        out = self._conv_as_products(x)
        if self.conv.bias is not None:
            out += self.conv.bias
        if self.norm_mode == "layer":
            out = self.layer_norm(out)
        elif self.norm_mode == "group":
            raise ValueError("GroupNorm is supported on the first conv layer only")
        return gelu_(out)

    def forward_channel_major(
        self, x: torch.Tensor, norm_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C_in, T) → (B, C_out, T'): the plain convolution, used under torch.export."""
        x = F.conv1d(x.to(self.conv.weight.dtype), self.conv.weight, self.conv.bias, self.stride)
        if self.norm_mode == "group":
            x = self.layer_norm(x, norm_lengths)
        elif self.norm_mode == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return gelu_(x)

    def _conv_as_products(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        k, s = self.kernel, self.stride
        t_out = self.out_frames(t)
        # weight rows ordered (tap, input channel), matching s·C contiguous input numbers
        w = self.conv.weight.permute(2, 1, 0).reshape(k * c, -1)  # (k·C_in, C_out)
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # the in-place accumulation below is not autocast: give it matching dtypes
            dtype = torch.get_autocast_dtype(device)
            x, w = x.to(dtype), w.to(dtype)
        out = None
        for j in range(k // s):  # blocks of s taps: (B, T', s·C) views, no copy
            view = x.narrow(1, j * s, t_out * s).unflatten(1, (t_out, s)).flatten(2)
            wj = w[j * s * c : (j + 1) * s * c].expand(b, -1, -1)
            out = torch.bmm(view, wj) if out is None else out.baddbmm_(view, wj)
        for tap in range((k // s) * s, k):  # leftover taps: every s-th frame
            view = x.narrow(1, tap, (t_out - 1) * s + 1)[:, ::s]
            wj = w[tap * c : (tap + 1) * c].expand(b, -1, -1)
            out = torch.bmm(view, wj) if out is None else out.baddbmm_(view, wj)
        return out


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
        dtype = rest[0].conv.weight.dtype if len(rest) else first.conv.weight.dtype
        if torch.compiler.is_exporting() or _cudnn_tf32(waveforms, dtype):
            x = self._channel_major(waveforms, norm_lengths, dtype)
        else:
            x = first.forward_waveform(waveforms, norm_lengths, dtype)
            for layer in rest:
                x = layer(x)
        if out_lengths is not None:
            for layer in rest:
                out_lengths = layer.out_lengths(out_lengths)
        return x, out_lengths

    def _channel_major(
        self, waveforms: torch.Tensor, norm_lengths: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """The plain conv → norm → GELU chain, (B, S) → (B, T, C). Used under torch.export
        (the strided views of the product form make export guard on floor-division
        identities it cannot prove for a dynamic length) and for fp32 on a GPU with
        cuDNN TF32 allowed."""
        first, rest = self.conv_layers[0], self.conv_layers[1:]
        x = first.forward_channel_major(waveforms.float()[:, None], norm_lengths).to(dtype)
        for layer in rest:
            x = layer.forward_channel_major(x)
        return x.transpose(1, 2)
