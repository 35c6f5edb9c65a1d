"""Small functional helpers shared by the modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(batch, frames)`` bool, True on each item's first ``lengths[b]`` frames (its valid
    frames; the rest is padding)."""
    return torch.arange(frames, device=lengths.device) < lengths[:, None]


def records_grad(x: torch.Tensor) -> bool:
    """Whether autograd is recording an op that takes ``x``."""
    return x.requires_grad and torch.is_grad_enabled()


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU, in place when autograd will not need ``x`` (inference), else out of place.

    Only for tensors the caller has just produced: writing in place skips a
    fresh allocation of the activation's size, which on CPU costs page faults.
    """
    if records_grad(x):
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


_HALF = (torch.float16, torch.bfloat16)


def channels_last_applies(x: torch.Tensor) -> bool:
    """Whether convolutions of ``x`` run as :func:`conv1d_channels_last`: on a CPU,
    except under torch.export (whose graph keeps the plain ``conv1d``)."""
    return x.device.type == "cpu" and not torch.compiler.is_exporting()


def channels_last_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, k), the nn.Conv1d layout → (C_out, C_in, 1, k) channels-last, the
    layout oneDNN convolves a channels-last input with fastest (for the positional
    convolution about 2x a channel-major weight; bench/RESULTS.md)."""
    return weight[:, :, None].contiguous(memory_format=torch.channels_last)


def conv1d_channels_last(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv1d(x, weight, ...)`` of a (B, C_in, T) ``x`` as oneDNN's direct convolution
    of the channels-last image (B, C_in, 1, T): on a CPU about twice the rate of
    ``F.conv1d`` (470 against 135-210 GFLOP/s on our benchmark machine), the same
    numbers up to the order of the fp32 sums. ``weight``: (C_out, C_in, k) or its
    :func:`channels_last_weight`. Returns (B, C_out, T') whose memory is time-major
    ((B, T', C_out) contiguous) when ``x`` is a time-major tensor transposed."""
    if weight.dim() == 3:
        weight = channels_last_weight(weight)
    y = F.conv2d(x[:, :, None], weight, bias, (1, stride), (0, padding), groups=groups)
    return y[:, :, 0]


def grouped_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, groups: int
) -> torch.Tensor:
    """``F.conv1d`` for the positional convolutions (``weight`` (C_out, C_in/groups, k), or
    where :func:`channels_last_applies` its :func:`channels_last_weight`); on a GPU, half-precision input (or
    any input under autocast) is convolved in float32 and returned in its own dtype.

    On a CPU, :func:`conv1d_channels_last` computes it, about twice as fast.

    cuDNN's half-precision kernels for these grouped convolutions (wav2vec2-base's:
    48 channels per group, kernel 128) can be many times slower than its fp32 ones
    (bench/gpu_variants.py; figures in bench/RESULTS.md). fp32 is also the more
    accurate of the two.
    """
    if x.is_cuda and (x.dtype in _HALF or torch.is_autocast_enabled("cuda")):
        bias = None if bias is None else bias.float()
        with torch.autocast("cuda", enabled=False):  # autocast would make it half again
            y = F.conv1d(x.float(), weight.float(), bias, padding=padding, groups=groups)
        return y.to(x.dtype)
    if channels_last_applies(x):
        return conv1d_channels_last(x, weight, bias, padding=padding, groups=groups)
    return F.conv1d(x, weight, bias, padding=padding, groups=groups)
