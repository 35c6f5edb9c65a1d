"""Conv layers ≥ 1 in the fast form: time-major (B, T, C) in and out.

The convolution is a sum of matrix products over strided views of the input
(strided_conv.py), then bias, LayerNorm over channels (which time-major needs
no transpose for) and GELU in place. A layer's weight is put in the form the
products take once per call (:func:`prepare`) and reused by every block of time.
"""

from __future__ import annotations

import torch
from torch import nn

from w2v.nn.fast.strided_conv import K3S2Weights, conv_k3s2, conv_products, product_matrix
from w2v.nn.functional import gelu_, records_grad
from w2v.nn.norm import GroupNorm, LayerNorm


def prepare(conv: nn.Conv1d) -> torch.Tensor | K3S2Weights:
    """The weight in the form the products take: F(3, 2)'s matrices (kernel 3 /
    stride 2, fp32 on CPU, eager, and not for autograd, since F(3, 2) writes its
    products in place into strided views), else the (kernel·C_in, C_out) product matrix."""
    weight = conv.weight
    device = weight.device.type
    winograd = (
        conv.kernel_size[0] == 3
        and conv.stride[0] == 2
        and device == "cpu"
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled(device)
        and not torch.compiler.is_compiling()
        and not records_grad(weight)
    )
    return K3S2Weights.of(weight) if winograd else product_matrix(weight)


def forward(
    x: torch.Tensor,
    conv: nn.Conv1d,
    norm: GroupNorm | LayerNorm | None,
    weights: torch.Tensor | K3S2Weights | None = None,
) -> torch.Tensor:
    """(B, T, C_in) contiguous → (B, T', C_out). ``weights``: ``prepare(conv)``, made
    once by a caller that runs several blocks of time (None: made here)."""
    out = _conv(x, prepare(conv) if weights is None else weights, conv.stride[0])
    if conv.bias is not None:
        out += conv.bias
    if isinstance(norm, LayerNorm):
        out = norm(out)
    elif isinstance(norm, GroupNorm):
        raise ValueError("GroupNorm is supported on the first conv layer only")
    return gelu_(out)


def _conv(x: torch.Tensor, weights: torch.Tensor | K3S2Weights, stride: int) -> torch.Tensor:
    device = x.device.type
    if isinstance(weights, K3S2Weights):
        if x.dtype == torch.float32 and not records_grad(x):  # a waveform's gradient
            return conv_k3s2(x, weights)
        weights = weights.weight
    if torch.is_autocast_enabled(device):
        # the in-place accumulation is not autocast: give it matching dtypes
        dtype = torch.get_autocast_dtype(device)
        x, weights = x.to(dtype), weights.to(dtype)
    return conv_products(x, weights, stride)
