"""Strided 1-d convolutions of time-major activations as matrix products.

Both functions take ``x`` (batch, frames, C_in), contiguous, and return
(batch, frames', C_out) without bias; no im2col copy is made.

* :func:`conv_products` (any kernel and stride) splits the kernel into blocks of
  ``stride`` taps. ``stride`` consecutive frames of C channels are
  ``stride·C`` contiguous numbers, so block j is a (frames', stride·C) view of
  the input; the output is the sum of one product per block, plus one per
  leftover tap (two products for kernel 3 / stride 2, one for kernel 2).
* :func:`conv_k3s2` (kernel 3, stride 2: layers 1-4 of every wav2vec 2.0
  encoder) uses 7 products per 3 output frames instead of 9. With even frames
  e_t = x_2t and odd frames o_t = x_2t+1, y_t = W0·e_t + W2·e_t+1 + W1·o_t: the odd
  part is one product per frame, the even part a 2-tap convolution, which a
  minimal filtering algorithm (Winograd's F(3, 2), interpolation points 0, 1,
  -1, ∞) computes with 4 products per 3 frames. Its transforms are sums and
  differences of whole frames; the two halved weights are exact, and its error
  against a float64 reference is close to that of :func:`conv_products` (bench/RESULTS.md
  has both, and the time each takes).
"""

from __future__ import annotations

from typing import NamedTuple

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


class K3S2Weights(NamedTuple):
    """A kernel-3 / stride-2 conv's weight and its transforms, each (C_in, C_out)."""

    weight: torch.Tensor  # (C_out, C_in, 3), as given
    w0: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor
    half_sum: torch.Tensor  # (W0 + W2) / 2
    half_diff: torch.Tensor  # (W0 - W2) / 2

    @classmethod
    def of(cls, weight: torch.Tensor) -> K3S2Weights:
        # one copy into (tap, C_out, C_in), each tap's matrix then a transposed view (BLAS
        # takes either layout; this copy is much faster than one into (tap, C_in, C_out))
        w0, w1, w2 = weight.permute(2, 0, 1).contiguous().mT.unbind(0)
        return cls(weight, w0, w1, w2, (w0 + w2) * 0.5, (w0 - w2) * 0.5)


def conv_k3s2(x: torch.Tensor, weights: K3S2Weights) -> torch.Tensor:
    """(B, T, C_in) → (B, (T - 3) // 2 + 1, C_out) by F(3, 2) on the even frames.

    Not for autograd (outputs are written in place into strided views).
    """
    b, t, _ = x.shape
    t_out = (t - 3) // 2 + 1
    n = t_out // 3  # whole tiles of 3 output frames
    out = x.new_empty(b, t_out, weights.w0.shape[1])

    def w(m: torch.Tensor) -> torch.Tensor:
        return m.expand(b, -1, -1)

    if n:

        def even(j: int) -> torch.Tensor:  # e_{3u+j} = x_{6u+2j}, u < n: (B, n, C) view
            return x[:, 2 * j : 2 * j + 6 * (n - 1) + 1 : 6]

        e0, e1, e2, e3 = (even(j) for j in range(4))
        tiles = out[:, : 3 * n].view(b, n, 3, -1)  # output frame 3u+i is tiles[:, u, i]
        p1 = torch.bmm(e1 + e2, w(weights.half_sum))
        p2 = torch.bmm(e2 - e1, w(weights.half_diff))
        torch.sub(p1, p2, out=tiles[:, :, 1])  # W0·e1 + W2·e2
        both = p1.add_(p2)  # W0·e2 + W2·e1
        torch.baddbmm(both, e0 - e2, w(weights.w0), out=tiles[:, :, 0])
        torch.baddbmm(both, e3 - e1, w(weights.w2), out=tiles[:, :, 2])
        # the odd frames x_1, x_3, ..., x_{6n-1}: one product for all 3n outputs
        out[:, : 3 * n].baddbmm_(x[:, 1 : 6 * n : 2], w(weights.w1))
    left = t_out - 3 * n
    if left:  # one or two frames left over: one product per tap
        tail, rest = out[:, 3 * n :], x[:, 6 * n :]
        torch.bmm(rest[:, 0 : 2 * left : 2], w(weights.w0), out=tail)
        tail.baddbmm_(rest[:, 1 : 2 * left : 2], w(weights.w1))
        tail.baddbmm_(rest[:, 2 : 2 * left + 1 : 2], w(weights.w2))
    return out
