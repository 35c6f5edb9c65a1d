"""Conv layer 0 in the fast form: the waveform's windows times one matrix.

Layer 0 has one input channel, so its input is a (B, T, kernel) view of the
waveform's windows and the convolution is one product with the (kernel, C)
weight. With GroupNorm the per-channel statistics follow exactly from the
windows' mean and (kernel × kernel) covariance, so the norm is folded into the
matrix of that product and never reads the C-channel output; GELU then runs in
place. Layer 0 always computes in float32 (a small part of the model's FLOPs)
and hands the next layer the model's dtype.

The functions take a block of time at a time (conv_stack.py runs the blocks);
:func:`forward` is the whole layer in one block.
"""

from __future__ import annotations

import torch
from torch import nn

from w2v.nn.functional import gelu_
from w2v.nn.norm import GroupNorm, LayerNorm, valid_frames

_STATS_BLOCK_FRAMES = 65536
"""Frames (summed over the batch) per float64 block of the GroupNorm statistics."""


def windows(conv: nn.Conv1d, waveforms: torch.Tensor) -> torch.Tensor:
    """(B, S) waveform → (B, T, kernel) float32 view of the windows layer 0 convolves."""
    if conv.in_channels != 1:
        raise ValueError("the waveform is the input of the first layer (one channel)")
    return waveforms.float().unfold(-1, conv.kernel_size[0], conv.stride[0])


def affine(
    conv: nn.Conv1d,
    norm: GroupNorm | LayerNorm | None,
    windows: torch.Tensor,
    norm_lengths: torch.Tensor | None,
) -> torch.Tensor:
    """Layer 0's conv (and GroupNorm, folded in) as one matrix, (B or 1, k + 1, C) float32:
    ``[windows, 1] @ affine``; its last row is the shift. ``windows``: all of them,
    (B, T, k); ``norm_lengths`` (B,): valid output frames per item, over which the
    GroupNorm statistics are taken (None: all frames)."""
    weight = conv.weight.float()[:, 0]  # (C, k)
    if isinstance(norm, GroupNorm):
        return _group_norm_folded(windows, weight, norm, norm_lengths)
    shift = weight.new_zeros(weight.shape[0]) if conv.bias is None else conv.bias
    return torch.cat([weight.T, shift.float()[None]])[None]


def forward_windows(
    norm: GroupNorm | LayerNorm | None, windows: torch.Tensor, affine: torch.Tensor
) -> torch.Tensor:
    """(B, t, k) windows (any block of time) → (B, t, C) layer-0 output, float32.
    ``affine``: from :func:`affine`, made once for all blocks."""
    # a column of ones makes the shift part of the one product (a copy of k + 1
    # numbers per frame, instead of a pass over the C-channel output to add it)
    ones = windows.new_ones(windows.shape[:-1] + (1,))
    x = torch.bmm(torch.cat([windows, ones], -1), affine.expand(windows.shape[0], -1, -1))
    if isinstance(norm, LayerNorm):
        x = norm(x)
    return gelu_(x)


def forward(
    conv: nn.Conv1d,
    norm: GroupNorm | LayerNorm | None,
    waveforms: torch.Tensor,
    norm_lengths: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(B, S) waveform → (B, T, C) in ``dtype``, in one block of time."""
    x = windows(conv, waveforms)
    return forward_windows(norm, x, affine(conv, norm, x, norm_lengths)).to(dtype)


def _group_norm_folded(
    windows: torch.Tensor, weight: torch.Tensor, norm: GroupNorm, lengths: torch.Tensor | None
) -> torch.Tensor:
    """GroupNorm(conv(x)) as one product: y = windows @ (W·scale)ᵀ + shift, returned
    as the (B, k + 1, C) matrix of :func:`affine`. ``weight``: (C, k).

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
    return fold_group_norm(weight, norm, mean, cov / count)


def fold_group_norm(
    weight: torch.Tensor, norm: GroupNorm, mean: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """The (B, k + 1, C) float32 matrix of :func:`affine` from the windows' float64 mean
    (B, 1, k) and covariance (B, k, k) over valid frames. ``weight``: (C, k)."""
    w = weight.double()  # (C, k)
    var = ((w @ cov) * w).sum(-1)  # (B, C)
    scale = torch.rsqrt(var + norm.eps) * norm.weight.double()  # (B, C)
    shift = norm.bias.double() - (mean[:, 0] @ w.T) * scale  # (B, C)
    w_eff = (w * scale[..., None]).transpose(1, 2)  # (B, k, C)
    return torch.cat([w_eff, shift[:, None]], 1).float()
