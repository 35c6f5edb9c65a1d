"""Conv layers ≥ 1 in the fast form: time-major (B, T, C) in and out.

On a CPU the convolution is oneDNN's direct convolution of the time-major activations
seen as a channels-last image (B, C, 1, T): ``F.conv2d`` with a channels-last
(C_out, C_in, 1, k) weight, the bias added by the convolution (:func:`direct_conv`). On
other devices it is a sum of matrix products over strided views of the input
(strided_conv.py), then the bias. Then LayerNorm over channels (which time-major needs
no transpose for) and GELU in place. A layer's weight is put in the form its
convolution takes once per call (:func:`prepare`) and reused by every block of time.

Why channels-last on a CPU: oneDNN convolves a channels-last input at about 470 GFLOP/s
here, the rate of ONNX Runtime's GEMM; channel-major ``F.conv1d`` runs at about 135 and
products through torch's (MKL) matrix multiply at about 210-250 (bench/RESULTS.md).
"""

from __future__ import annotations

import torch
from torch import nn

from w2v.nn.fast.derived import cached
from w2v.nn.fast.strided_conv import conv_products, product_matrix
from w2v.nn.functional import channels_last_weight, conv1d_channels_last, gelu_
from w2v.nn.norm import GroupNorm, LayerNorm


def direct_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> torch.Tensor:
    """The convolution of time-major ``x`` (B, T, C_in) → time-major (B, T', C_out),
    contiguous; ``weight``: ``channels_last_weight(conv.weight)``."""
    return conv1d_channels_last(x.transpose(1, 2), weight, bias, stride).transpose(1, 2)


def prepare(conv: nn.Conv1d) -> torch.Tensor:
    """The weight in the form the convolution takes: on a CPU the channels-last
    (C_out, C_in, 1, k) weight of :func:`direct_conv`, else the (kernel·C_in, C_out)
    product matrix."""
    if conv.weight.device.type == "cpu":
        return cached(conv, "channels_last", lambda: channels_last_weight(conv.weight), conv.weight)
    return product_matrix(conv.weight)


def forward(
    x: torch.Tensor,
    conv: nn.Conv1d,
    norm: GroupNorm | LayerNorm | None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T, C_in) contiguous → (B, T', C_out). ``weights``: ``prepare(conv)``, made
    once by a caller that runs several blocks of time (None: made here)."""
    out = _conv(x, prepare(conv) if weights is None else weights, conv)
    if isinstance(norm, LayerNorm):
        out = norm(out)
    elif isinstance(norm, GroupNorm):
        raise ValueError("GroupNorm is supported on the first conv layer only")
    return gelu_(out)


def _conv(x: torch.Tensor, weights: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The convolution and its bias."""
    if weights.dim() == 4:  # a CPU: oneDNN's direct convolution (autocast applies to it)
        return direct_conv(x, weights, conv.bias, conv.stride[0])
    device = x.device.type
    if torch.is_autocast_enabled(device):
        # the in-place accumulation is not autocast: give it matching dtypes
        dtype = torch.get_autocast_dtype(device)
        x, weights = x.to(dtype), weights.to(dtype)
    out = conv_products(x, weights, conv.stride[0])
    if conv.bias is not None:
        out += conv.bias
    return out
