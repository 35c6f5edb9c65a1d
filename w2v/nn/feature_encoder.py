"""The convolutional feature encoder: raw waveform → one 512-d frame every 20 ms.

Activations stay time-major, (batch, frames, channels), from the waveform to
the feature projection, and every convolution is computed as matrix products
over views of its input (nn/strided_conv.py):

* layer 0 (one input channel) unfolds the waveform into (frames, kernel)
  windows and multiplies them by the (kernel, channels) weight. With GroupNorm
  the per-channel statistics follow exactly from the windows' mean and
  (kernel × kernel) covariance, so the norm is folded into that one product,
  and GELU runs in place. Layer 0 always computes in float32 (0.3 GFLOP per
  10 s) and hands the next layer the model's dtype.
* layers ≥ 1 are products of strided views (kernel 3 / stride 2 with 7 products
  per 3 frames instead of 9, in fp32 on CPU).
* the first layers run in blocks of time. Layer 0's output is the model's
  largest activation (512 channels × 3200 frames per second of audio; 3 GiB for
  8 × 60 s in fp32) and layer 1's is half that; computed block by block
  through layer 2, they never exist whole. On CPU a block (16 MiB) stays small
  enough for malloc to reuse its memory from block to block instead of mapping
  fresh pages, each of which costs a page fault.

This replaces the conv → transpose → norm → transpose round trips of a
channel-major layout, which on CPU cost more than the convolutions' FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from w2v.config import Config
from w2v.nn.functional import gelu_, records_grad
from w2v.nn.norm import GroupNorm, LayerNorm, valid_frames
from w2v.nn.strided_conv import K3S2Weights, conv_k3s2, conv_products, product_matrix

_BLOCKED_LAYERS = 3
"""Conv layers 0..2 run block by block over time; the later ones (a quarter of layer 0's
size and less) run on the whole sequence, where their matrix products are larger."""

_BLOCK_FRAMES = {"cpu": 8192}
"""Layer-0 frames (summed over the batch) per block, by device type; other devices
use _BLOCK_FRAMES_OTHER. On CPU: 16 MiB of fp32 layer-0 output, 28 MiB for layers 0-2."""
_BLOCK_FRAMES_OTHER = 65536

_STATS_BLOCK_FRAMES = 65536
"""Frames (summed over the batch) per float64 block of the GroupNorm statistics."""


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

    def in_range(self, start: int, stop: int) -> tuple[int, int]:
        """Input frames [a, b) that output frames [start, stop) are computed from."""
        return start * self.stride, (stop - 1) * self.stride + self.kernel

    # ---------------------------------------------------------------- layer 0
    def windows(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, S) waveform → (B, T, kernel) fp32 view of layer 0's input windows."""
        if self.conv.in_channels != 1:
            raise ValueError("the waveform is the input of the first layer (one channel)")
        return waveforms.float().unfold(-1, self.kernel, self.stride)

    def affine(self, windows: torch.Tensor, norm_lengths: torch.Tensor | None) -> torch.Tensor:
        """Layer 0's conv (and GroupNorm, folded in) as one matrix, (B or 1, k + 1, C) fp32:
        ``[windows, 1] @ affine``; its last row is the shift. ``norm_lengths``: valid
        output frames per item, over which the GroupNorm statistics are taken (None:
        all frames)."""
        weight = self.conv.weight.float()[:, 0]  # (C, k)
        if self.norm_mode == "group":
            return self._group_norm_folded(windows, weight, norm_lengths)
        shift = weight.new_zeros(weight.shape[0]) if self.conv.bias is None else self.conv.bias
        return torch.cat([weight.T, shift.float()[None]])[None]

    def forward_windows(self, windows: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
        """(B, t, k) windows (any block of time) → (B, t, C) layer-0 output, fp32."""
        # a column of ones makes the shift part of the one product (a copy of k + 1
        # numbers per frame, instead of a pass over the C-channel output to add it)
        ones = windows.new_ones(windows.shape[:-1] + (1,))
        x = torch.bmm(torch.cat([windows, ones], -1), affine.expand(windows.shape[0], -1, -1))
        if self.norm_mode == "layer":
            x = self.layer_norm(x)
        return gelu_(x)

    def forward_waveform(
        self, waveforms: torch.Tensor, norm_lengths: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """(B, S) waveform → (B, T, C) in ``dtype``, in one block (FeatureEncoder blocks it)."""
        windows = self.windows(waveforms)
        return self.forward_windows(windows, self.affine(windows, norm_lengths)).to(dtype)

    def _group_norm_folded(
        self, windows: torch.Tensor, weight: torch.Tensor, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """GroupNorm(conv(x)) as one product: y = windows @ (W·scale)ᵀ + shift, returned
        as the (B, k + 1, C) matrix of :meth:`affine`.

        Channel c of the conv output is w_c·f_t (+ b_c, which the mean removes),
        so its mean over valid frames is w_c·mean(f) and its variance
        w_cᵀ·cov(f)·w_c. The statistics of the (T, k) windows are taken in
        float64, two passes over blocks of time, which makes the result at least
        as accurate as normalising the materialised conv output in float32.
        """
        b, t, k = windows.shape
        step = max(1, _STATS_BLOCK_FRAMES // b)
        mask = None
        if lengths is not None:
            mask = valid_frames(t, lengths, torch.float64)  # (B, T, 1)

        def blocks():  # (B, t', k) float64 windows, each masked to valid frames
            for t0 in range(0, t, step):
                f = windows[:, t0 : t0 + step].double()
                yield f if mask is None else f * mask[:, t0 : t0 + step]

        if mask is None:
            count = windows.new_full((b, 1, 1), t, dtype=torch.float64)
        else:
            count = mask.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
        mean = sum(f.sum(1, keepdim=True) for f in blocks()) / count  # (B, 1, k)
        cov = windows.new_zeros(b, k, k, dtype=torch.float64)
        for t0, f in zip(range(0, t, step), blocks(), strict=True):
            centred = f - mean
            if mask is not None:
                centred *= mask[:, t0 : t0 + step]
            cov.baddbmm_(centred.transpose(1, 2), centred)
        cov /= count
        w = weight.double()  # (C, k)
        var = ((w @ cov) * w).sum(-1)  # (B, C)
        gn = self.layer_norm
        scale = torch.rsqrt(var + gn.eps) * gn.weight.double()  # (B, C)
        shift = gn.bias.double() - (mean[:, 0] @ w.T) * scale  # (B, C)
        w_eff = (w * scale[..., None]).transpose(1, 2)  # (B, k, C)
        return torch.cat([w_eff, shift[:, None]], 1).float()

    # ---------------------------------------------------------------- layers ≥ 1
    def prepare(self) -> torch.Tensor | K3S2Weights:
        """The weight in the form the products take, made once per call and reused by
        every block of time: F(3, 2)'s matrices (fp32 on CPU, eager, and not for
        autograd, since F(3, 2) writes its products in place into strided views), else
        the (kernel·C_in, C_out) product matrix."""
        weight = self.conv.weight
        device = weight.device.type
        winograd = (
            self.kernel == 3
            and self.stride == 2
            and device == "cpu"
            and weight.dtype == torch.float32
            and not torch.is_autocast_enabled(device)
            and not torch.compiler.is_compiling()
            and not records_grad(weight)
        )
        return K3S2Weights.of(weight) if winograd else product_matrix(weight)

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor | K3S2Weights | None = None
    ) -> torch.Tensor:
        """(B, T, C_in) contiguous → (B, T', C_out). ``weights``: from :meth:`prepare`."""
        out = self._conv(x, self.prepare() if weights is None else weights)
        if self.conv.bias is not None:
            out += self.conv.bias
        if self.norm_mode == "layer":
            out = self.layer_norm(out)
        elif self.norm_mode == "group":
            raise ValueError("GroupNorm is supported on the first conv layer only")
        return gelu_(out)

    def _conv(self, x: torch.Tensor, weights: torch.Tensor | K3S2Weights) -> torch.Tensor:
        device = x.device.type
        if isinstance(weights, K3S2Weights):
            if x.dtype == torch.float32 and not records_grad(x):  # a waveform's gradient
                return conv_k3s2(x, weights)
            weights = weights.weight
        if torch.is_autocast_enabled(device):
            # the in-place accumulation is not autocast: give it matching dtypes
            dtype = torch.get_autocast_dtype(device)
            x, weights = x.to(dtype), weights.to(dtype)
        return conv_products(x, weights, self.stride)

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
            x = self._blocked(waveforms, norm_lengths, dtype)
            for layer in self.conv_layers[_BLOCKED_LAYERS:]:
                x = layer(x)
        if out_lengths is not None:
            for layer in rest:
                out_lengths = layer.out_lengths(out_lengths)
        return x, out_lengths

    def _blocked(
        self, waveforms: torch.Tensor, norm_lengths: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """Layers 0 .. _BLOCKED_LAYERS-1, block by block over time: (B, S) → (B, T, C)."""
        first, *rest = self.conv_layers[:_BLOCKED_LAYERS]
        windows = first.windows(waveforms)  # (B, T0, k) view
        affine = first.affine(windows, norm_lengths)
        weights = [layer.prepare() for layer in rest]

        def through(start: int, stop: int) -> torch.Tensor:
            """Output frames [start, stop) of the last blocked layer."""
            ranges = [(start, stop)]
            for layer in reversed(rest):
                ranges.insert(0, layer.in_range(*ranges[0]))
            x = first.forward_windows(windows[:, slice(*ranges[0])], affine).to(dtype)
            for layer, w in zip(rest, weights, strict=True):
                x = layer(x, w)
            return x

        frames, stride = windows.shape[1], 1
        for layer in rest:
            frames, stride = layer.out_frames(frames), stride * layer.stride
        block_frames = _BLOCK_FRAMES.get(waveforms.device.type, _BLOCK_FRAMES_OTHER)
        step = max(1, block_frames // stride // waveforms.shape[0])
        graph = records_grad(waveforms) or records_grad(first.conv.weight)
        if step >= frames or graph or torch.compiler.is_compiling():
            return through(0, frames)  # one block (and, for autograd, no copies)
        out = None
        for t0 in range(0, frames, step):
            block = through(t0, min(t0 + step, frames))
            if out is None:
                out = block.new_empty(block.shape[0], frames, block.shape[2])
            out[:, t0 : t0 + block.shape[1]] = block
        return out

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
