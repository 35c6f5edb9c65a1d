"""Strided 1-d convolutions of time-major activations as matrix products (the fast
form's convolution off the CPU; on a CPU, layers.py uses oneDNN's direct convolution).

:func:`conv_products` takes ``x`` (batch, frames, C_in), contiguous, and returns
(batch, frames', C_out) without bias; no im2col copy is made. It splits the kernel into
blocks of ``stride`` taps. ``stride`` consecutive frames of C channels are ``stride·C``
contiguous numbers, so block j is a (frames', stride·C) view of the input; the output
is the sum of one product per block, plus one per leftover tap (two products for
kernel 3 / stride 2, one for kernel 2).

(Winograd's F(3, 2) for the kernel-3 / stride-2 layers, 7 products per 3 frames instead
of 9, lived here while the CPU path ran on torch's MKL products; against oneDNN's direct
convolution at twice that rate it gained nothing, bench/RESULTS.md.)
"""

from __future__ import annotations

import torch


def product_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, kernel), the nn.Conv1d layout → the (kernel·C_in, C_out) matrix whose
    rows are ordered (tap, input channel), matching stride·C contiguous input numbers."""
    c_out, c_in, kernel = weight.shape
    # contiguous: half-precision products run ~6% slower with a transposed operand
    return weight.permute(2, 1, 0).reshape(kernel * c_in, c_out)


def conv_products(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, T, C_in) → (B, T', C_out). ``weight``: (C_out, C_in, kernel), the nn.Conv1d
    layout, or its :func:`product_matrix` (made once, for a caller that convolves
    several blocks of time with one weight)."""
    b, t, c = x.shape
    w = weight if weight.dim() == 2 else product_matrix(weight)  # (k·C_in, C_out)
    kernel = w.shape[0] // c
    t_out = (t - kernel) // stride + 1
    out = None
    for j in range(kernel // stride):  # blocks of `stride` taps: (B, T', s·C) views
        view = x.narrow(1, j * stride, t_out * stride).unflatten(1, (t_out, stride)).flatten(2)
        wj = w[j * stride * c : (j + 1) * stride * c].expand(b, -1, -1)
        out = torch.bmm(view, wj) if out is None else out.baddbmm_(view, wj)
    for tap in range((kernel // stride) * stride, kernel):  # leftover taps: every s-th frame
        view = x.narrow(1, tap, (t_out - 1) * stride + 1)[:, ::stride]
        wj = w[tap * c : (tap + 1) * c].expand(b, -1, -1)
        out = torch.bmm(view, wj) if out is None else out.baddbmm_(view, wj)
    return out
