"""The conv stack as traced into a graph (torch.export, ``w2v export --onnx``).

Channel-major convolutions as in the plain form (graph runtimes have fast convolution
kernels, and the eager product form's strided views make export guard on length
arithmetic), with one change: a group-norm layer 0 is computed as in :mod:`layer0`, its
GroupNorm folded into the product. The waveform's windows come from one convolution
with an identity kernel, plus a constant channel of ones for the shift; their mean and
10 × 10 covariance over valid frames give the norm's statistics exactly
(:func:`layer0.fold_group_norm`), so layer 0's 512-channel output is written once, by
one product, instead of being read three more times by a masked GroupNorm (about 25 ms
per 10 s of base in ONNX Runtime, bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from w2v.nn.fast.layer0 import fold_group_norm
from w2v.nn.functional import frame_mask
from w2v.nn.norm import GroupNorm, LayerNorm


def forward(
    stack: Sequence[tuple[nn.Conv1d, GroupNorm | LayerNorm | None]],
    waveforms: torch.Tensor,
    norm_lengths: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(B, S) waveform → (B, T, C) features in ``dtype``, as the plain form computes them."""
    (conv0, norm0), *rest = stack
    if isinstance(norm0, GroupNorm):
        x = _group_norm_layer0(conv0, norm0, waveforms.float(), norm_lengths)
    else:
        x = _layer(conv0, norm0, waveforms.float()[:, None])
    x = x.to(dtype)  # (B, C, T0)
    for conv, norm in rest:
        x = _layer(conv, norm, x)
    return x.transpose(1, 2)


def _layer(conv: nn.Conv1d, norm: GroupNorm | LayerNorm | None, x: torch.Tensor) -> torch.Tensor:
    """Conv → [LayerNorm over channels] → GELU, channel-major (B, C_in, T) → (B, C_out, T')."""
    x = conv(x.to(conv.weight.dtype))
    if isinstance(norm, LayerNorm):
        x = norm(x.transpose(1, 2)).transpose(1, 2)
    elif norm is not None:
        raise ValueError("GroupNorm is supported on the first conv layer only")
    return F.gelu(x)


def _group_norm_layer0(
    conv: nn.Conv1d, norm: GroupNorm, waveforms: torch.Tensor, lengths: torch.Tensor | None
) -> torch.Tensor:
    """(B, S) float32 → GELU(GroupNorm(conv(x))) (B, C, T0), statistics over each item's
    ``lengths`` valid frames (None: all)."""
    k, stride = conv.kernel_size[0], conv.stride[0]
    # output channel j < k: tap j of each window; channel k: ones (its bias), for the shift
    taps = torch.eye(k + 1, k, dtype=torch.float32, device=waveforms.device)[:, None]
    ones = torch.zeros(k + 1, dtype=torch.float32, device=waveforms.device)
    ones[k] = 1.0
    windows = F.conv1d(waveforms[:, None], taps, ones, stride=stride)  # (B, k + 1, T0)
    f = windows[:, :k].double()  # (B, k, T0)
    frames = f.shape[-1]
    if lengths is None:
        mask = torch.ones_like(f[:, :1])
    else:
        mask = frame_mask(lengths, frames)[:, None].to(f.dtype)  # (B, 1, T0)
    count = mask.sum(-1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
    mean = (f * mask).sum(-1, keepdim=True) / count  # (B, k, 1)
    centred = (f - mean) * mask
    cov = centred @ centred.transpose(1, 2) / count  # (B, k, k)
    affine = fold_group_norm(conv.weight.float()[:, 0], norm, mean.transpose(1, 2), cov)
    return F.gelu(affine.transpose(1, 2) @ windows)  # (B, C, k + 1) @ (B, k + 1, T0)
