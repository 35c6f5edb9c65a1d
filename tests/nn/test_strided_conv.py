"""Strided convolutions as matrix products (w2v.nn.fast.strided_conv) against float64 F.conv1d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from w2v.nn.fast.strided_conv import K3S2Weights, conv_k3s2, conv_products, product_matrix


def reference(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, T, C_in) → (B, T', C_out), in float64."""
    return F.conv1d(x.double().transpose(1, 2), weight.double(), stride=stride).transpose(1, 2)


def inputs(batch: int, frames: int, c_in: int, c_out: int, kernel: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, c_in, generator=g)
    weight = torch.randn(c_out, c_in, kernel, generator=g) / (c_in * kernel) ** 0.5
    return x, weight


def fp32_error(ours: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int) -> float:
    assert ours.dtype == torch.float32
    ref = reference(x, weight, stride)
    assert ours.shape == ref.shape
    return (ours.double() - ref).abs().max().item()


@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 2), (10, 5), (4, 3), (5, 1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_products(kernel, stride, batch):
    x, weight = inputs(batch, 101, 24, 40, kernel)
    ours = conv_products(x, weight, stride)
    error = fp32_error(ours, x, weight, stride)
    assert error < 1e-5
    # the prepared matrix (what a blocked caller passes) gives the same numbers
    assert torch.equal(conv_products(x, product_matrix(weight), stride), ours)


# output frames: 1 and 2 (no whole tile of 3), then 3k, 3k + 1 and 3k + 2
@pytest.mark.parametrize("frames", [3, 5, 7, 8, 199, 200, 201, 202, 203])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_k3s2_equals_the_convolution(frames, batch):
    x, weight = inputs(batch, frames, 48, 40, 3)
    ours = conv_k3s2(x, K3S2Weights.of(weight))
    error = fp32_error(ours, x, weight, 2)
    direct = fp32_error(conv_products(x, weight, 2), x, weight, 2)
    # F(3, 2)'s rounding is of the same size as the direct products'
    assert error < max(3 * direct, 1e-6), (error, direct)


def test_conv_k3s2_full_width():
    """512 channels, as in every wav2vec 2.0 encoder."""
    x, weight = inputs(2, 1001, 512, 512, 3, seed=1)
    error = fp32_error(conv_k3s2(x, K3S2Weights.of(weight)), x, weight, 2)
    direct = fp32_error(conv_products(x, weight, 2), x, weight, 2)
    assert error < 3 * direct, (error, direct)
