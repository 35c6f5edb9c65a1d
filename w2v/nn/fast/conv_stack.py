"""The fast form of the whole conv stack: when it applies, and its blocks of time.

Activations stay time-major, (batch, frames, channels), from the waveform to
the feature projection: this avoids the conv → transpose → norm → transpose
round trips of the channel-major plain form, which on CPU cost more than the
convolutions' FLOPs (bench/RESULTS.md).

The first layers run in blocks of time. Layer 0's output is the model's largest
activation (512 channels × 3200 frames per second of audio) and layer 1's is half
that; computed block by block through layer 2, they never exist whole. On CPU a
block stays small enough for malloc to reuse its memory from block to block
instead of mapping fresh pages, each of which costs a page fault.

A stack is given as (conv, norm) per layer: the ``conv`` and ``layer_norm``
modules of each :class:`w2v.nn.feature_encoder.ConvLayer`, norm None where
the layer has none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from w2v.nn.fast import graph, layer0, layers
from w2v.nn.functional import records_grad
from w2v.nn.norm import GroupNorm, LayerNorm

Layer = tuple[nn.Conv1d, GroupNorm | LayerNorm | None]

_BLOCKED_LAYERS = 3
"""Conv layers 0..2 run block by block over time; the later ones (a quarter of layer 0's
size and less) run on the whole sequence, where their matrix products are larger."""

_BLOCK_FRAMES = {"cpu": 8192}
"""Layer-0 frames (summed over the batch) per block, by device type; other devices
use _BLOCK_FRAMES_OTHER. On CPU: 16 MiB of fp32 layer-0 output, 28 MiB for layers 0-2."""
_BLOCK_FRAMES_OTHER = 65536


def applies(waveforms: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the fast form should compute the conv stack of a ``dtype`` model for
    ``waveforms``: always under torch.export (its graph form, :mod:`graph`), else
    unless cuDNN may use TF32 (:func:`_cudnn_tf32`)."""
    return torch.compiler.is_exporting() or not _cudnn_tf32(waveforms, dtype)


def _cudnn_tf32(waveforms: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether an fp32 model on a GPU should run its convolutions through cuDNN.

    PyTorch lets cuDNN convolutions use TF32 by default
    (``torch.backends.cudnn.allow_tf32``), as every ``nn.Conv1d`` does, transformers'
    too; the product form's matmuls follow the stricter matmul setting. So with
    cuDNN TF32 on, the plain form runs, which is then the faster; with it off, the
    product form, which is as fast as cuDNN in true fp32 (bench/gpu_variants.py,
    figures in bench/RESULTS.md).
    """
    return (
        waveforms.is_cuda
        and dtype == torch.float32
        and torch.backends.cudnn.enabled
        and torch.backends.cudnn.allow_tf32
    )


def forward(
    stack: Sequence[Layer],
    waveforms: torch.Tensor,
    norm_lengths: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(B, S) waveform → (B, T, C) features in ``dtype``, as the plain form computes them.

    ``norm_lengths`` (B,): valid frames of layer 0's output, over which GroupNorm
    takes its statistics (None: all frames). Under torch.export: the graph form
    (:mod:`graph`), since the strided views of the product form make export guard on
    floor-division identities it cannot prove for a dynamic length.
    """
    if torch.compiler.is_exporting():
        return graph.forward(stack, waveforms, norm_lengths, dtype)
    x = _blocked(stack[:_BLOCKED_LAYERS], waveforms, norm_lengths, dtype)
    for conv, norm in stack[_BLOCKED_LAYERS:]:
        x = layers.forward(x, conv, norm)
    return x


def _blocked(
    stack: Sequence[Layer],
    waveforms: torch.Tensor,
    norm_lengths: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Layers 0 .. _BLOCKED_LAYERS-1, block by block over time: (B, S) → (B, T, C)."""
    (conv0, norm0), *rest = stack
    windows = layer0.windows(conv0, waveforms)  # (B, T0, k) view
    affine = layer0.affine(conv0, norm0, windows, norm_lengths)
    weights = [layers.prepare(conv) for conv, _ in rest]

    def through(start: int, stop: int) -> torch.Tensor:
        """Output frames [start, stop) of the last blocked layer."""
        ranges = [(start, stop)]
        for conv, _ in reversed(rest):
            ranges.insert(0, _in_range(conv, *ranges[0]))
        x = layer0.forward_windows(norm0, windows[:, slice(*ranges[0])], affine).to(dtype)
        for (conv, norm), w in zip(rest, weights, strict=True):
            x = layers.forward(x, conv, norm, w)
        return x

    frames, stride = windows.shape[1], 1
    for conv, _ in rest:
        frames = (frames - conv.kernel_size[0]) // conv.stride[0] + 1
        stride *= conv.stride[0]
    block_frames = _BLOCK_FRAMES.get(waveforms.device.type, _BLOCK_FRAMES_OTHER)
    step = max(1, block_frames // stride // waveforms.shape[0])
    graph = records_grad(waveforms) or records_grad(conv0.weight)
    if step >= frames or graph or torch.compiler.is_compiling():
        return through(0, frames)  # one block (and, for autograd, no copies)
    out = None
    for t0 in range(0, frames, step):
        block = through(t0, min(t0 + step, frames))
        if out is None:
            out = block.new_empty(block.shape[0], frames, block.shape[2])
        out[:, t0 : t0 + block.shape[1]] = block
    return out


def _in_range(conv: nn.Conv1d, start: int, stop: int) -> tuple[int, int]:
    """Input frames [a, b) that output frames [start, stop) of ``conv`` are computed from."""
    return start * conv.stride[0], (stop - 1) * conv.stride[0] + conv.kernel_size[0]
