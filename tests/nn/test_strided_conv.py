"""Strided convolutions as matrix products (w2v.nn.fast.strided_conv) against float64 F.conv1d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from w2v.nn.fast.strided_conv import conv_products, product_matrix


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
