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


def grouped_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, groups: int
) -> torch.Tensor:
    """``F.conv1d`` for the positional convolutions; on a GPU, half-precision input (or
    any input under autocast) is convolved in float32 and returned in its own dtype.

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
    return F.conv1d(x, weight, bias, padding=padding, groups=groups)
