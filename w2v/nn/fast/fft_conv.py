"""The long positional convolution through the FFT, on a CPU in fp32 inference.

wav2vec2's, HuBERT's and WavLM's positional convolution has kernel 128 over 16 groups
(48 channels each in base, 64 in large): 4.7 GFLOP per 10 s item in base as a direct
convolution, 3% of the forward pass. Through the FFT it is one small complex product
per frequency and group, a few percent of those FLOPs.

Overlap-save: the zero-padded sequence is cut into blocks of N = 3K frames (rounded up
to even), each overlapping the next by K - 1. Per block: ``rfft`` over time, per
frequency and group a (blocks × in) @ (in × out) complex product with the kernel's
transform, ``irfft``; the last N - K + 1 frames of each block are outputs, the rest
wrapped around. A fixed block length keeps one kernel transform for every input length,
derived once and kept (:mod:`derived`): (N/2 + 1) × C × C/groups complex64, 57 MB for
base and 101 MB for large.

The numbers are the convolution's up to rounding, and closer to it than the direct
convolution's fp32 sums: max |error| against a float64 convolution 0.4-0.5 times the
direct form's (base and large widths, 1-8 items of 10-60 s). On our benchmark CPU it
takes 2.3-3.5 times less time than oneDNN's direct convolution (base, 1 × 10 s: 4.2
against 12.5 ms); ``python -m bench.bench_positional`` measures it, figures in
bench/RESULTS.md.

Taken where the other CPU fast paths are (:func:`w2v.nn.fast.linear.cpu_fp32_inference`:
float32 on a CPU, nothing to record for autograd, not compiled, traced or exported), for
parameters that are not inference tensors, and only for kernels of
:data:`MIN_KERNEL` taps or more: data2vec-audio's kernel-19 stack keeps the direct
convolution, which is as fast there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from w2v.nn.fast.derived import cached
from w2v.nn.fast.linear import cpu_fp32_inference

MIN_KERNEL = 64
"""Fewest taps for which the FFT form is taken."""

BLOCK_ROWS = 8
"""Blocks (over the whole batch) transformed at a time: bounds each complex
intermediate at about 10 MB (base width; 13 MB large), whatever the input's length.
32 at a time was no faster (bench/RESULTS.md)."""


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv1d` computes the positional convolution of ``x`` (B, C, T)
    with ``weight`` (C_out, C_in/groups, K) here (module docstring). ``weight`` is a
    parameter the kernel transform is derived from: an inference tensor has no version
    counter to keep the transform by, so it keeps the direct form."""
    return (
        weight.shape[-1] >= MIN_KERNEL
        and x.shape[-1] > 0
        and not weight.is_inference()
        and cpu_fp32_inference(x, weight)
    )


def block_length(kernel: int) -> int:
    """N, the frames per block for a ``kernel``-tap convolution: 3K rounded up to even (the
    transform's length fixes an even N), so that each block gives 2K + 1 outputs or more."""
    return 3 * kernel + kernel % 2


def kernel_transform(weight: torch.Tensor, groups: int, block: int | None = None) -> torch.Tensor:
    """(C_out, C_in/groups, K) weight → (N/2 + 1, groups, in, out) complex64: the
    transform of each tap sequence reversed (the convolution is a correlation), taken
    in float64. ``block``: N, even and more than K (default :func:`block_length`); the
    transform's length fixes the block length :func:`conv1d` uses."""
    c_out, per_group, kernel = weight.shape
    block = block_length(kernel) if block is None else block
    if block % 2 or block <= kernel:
        raise ValueError(f"block length {block}: must be even and more than the kernel, {kernel}")
    spectrum = torch.fft.rfft(weight.double().flip(-1), n=block, dim=-1)
    spectrum = spectrum.view(groups, c_out // groups, per_group, -1)  # (G, out, in, F)
    return spectrum.permute(3, 0, 2, 1).to(torch.complex64).contiguous()


def conv1d(
    x: torch.Tensor,
    transform: torch.Tensor,
    bias: torch.Tensor | None,
    kernel: int,
    padding: int,
) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, padding=padding, groups=G)`` of (B, C, T) ``x`` from
    the weight's :func:`kernel_transform`. Returns (B, C, T') whose memory is time-major
    ((B, T', C) contiguous)."""
    b, c, t = x.shape
    n = 2 * (transform.shape[0] - 1)  # the block length the transform was taken for
    step = n - kernel + 1  # outputs per block
    t_out = t + 2 * padding - kernel + 1
    blocks = -(-t_out // step)
    groups = transform.shape[1]
    # (B, T', C), zero-padded on both sides to whole blocks; the windows are (rows, C, n)
    padded = F.pad(x.transpose(1, 2), (0, 0, padding, (blocks - 1) * step + n - t - padding))
    windows = padded.unfold(1, n, step).flatten(0, 1)
    out = x.new_empty(b * blocks, step, c)
    for r0 in range(0, b * blocks, BLOCK_ROWS):
        spectra = torch.fft.rfft(windows[r0 : r0 + BLOCK_ROWS], dim=-1)  # (r, C, F)
        r = spectra.shape[0]
        spectra = spectra.view(r, groups, c // groups, -1).permute(3, 1, 0, 2)  # (F, G, r, in)
        products = torch.matmul(spectra, transform)  # (F, G, r, out)
        products = products.permute(2, 1, 3, 0).reshape(r, c, -1)  # (r, C, F)
        y = torch.fft.irfft(products, n=n, dim=-1)[..., kernel - 1 :]  # (r, C, step)
        out[r0 : r0 + r] = y.transpose(1, 2)
    out = out.view(b, blocks * step, c)[:, :t_out]
    # one pass makes the output contiguous and adds the bias
    out = out + bias if bias is not None else out.contiguous()
    return out.transpose(1, 2)


def conv1d_kept(
    owner: nn.Module,
    x: torch.Tensor,
    weight: Callable[[], torch.Tensor],
    sources: tuple[torch.Tensor, ...],
    bias: torch.Tensor | None,
    kernel: int,
    padding: int,
    groups: int,
) -> torch.Tensor:
    """:func:`conv1d` of ``x`` for the conv module ``owner``, whose weight ``weight()``
    derives from the parameters ``sources``: the kernel transform is kept on ``owner``
    while they are unchanged (:func:`w2v.nn.fast.derived.cached`)."""
    transform = cached(owner, "fft", lambda: kernel_transform(weight(), groups), *sources)
    return conv1d(x, transform, bias, kernel, padding)
