"""Normalisation layers that compute in float32 whatever the activation dtype.

fairseq keeps its norms in fp32 under half precision; doing the same keeps
bf16/fp16 features close to fp32 ones. In fp32 these are the plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from w2v.nn.functional import frame_mask


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def valid_frames(frames: int, lengths: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T, 1) mask in ``dtype``: 1 on each item's first ``lengths[b]`` frames, else 0."""
    return frame_mask(lengths, frames).to(dtype)[..., None]


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fp32_params = self.weight is None or self.weight.dtype == torch.float32
        if x.dtype == torch.float32 and fp32_params:
            return super().forward(x)
        if x.device.type == "cpu" and fp32_params and x.dtype in (torch.bfloat16, torch.float16):
            # the CPU kernel takes half inputs with fp32 parameters and computes in fp32,
            # without the two conversion passes below (see bench/RESULTS.md)
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        y = F.layer_norm(
            x.float(), self.normalized_shape, _f32(self.weight), _f32(self.bias), self.eps
        )
        return y.to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """GroupNorm(C, C): each channel normalised over time.

    With ``lengths`` the statistics are taken over each item's valid frames only,
    so a padded item is normalised exactly as it would be alone.
    """

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, C, T); lengths: (B,) valid frames
        dtype = x.dtype
        if lengths is None:
            if dtype == torch.float32 and self.weight.dtype == torch.float32:
                return super().forward(x)
            y = F.group_norm(
                x.float(), self.num_groups, _f32(self.weight), _f32(self.bias), self.eps
            )
            return y.to(dtype)
        if self.num_groups != self.num_channels:
            raise NotImplementedError("valid-frame statistics need one group per channel")
        # Used on conv layer 0 by the plain form of the feature encoder; its fast form folds
        # this norm into the conv (w2v/nn/fast/layer0.py). Sums over time as batched mat-vec
        # products, one multiply-add.
        xf = x.float()
        valid = valid_frames(x.shape[-1], lengths, xf.dtype)  # (B, T, 1)
        count = valid.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
        mean = torch.bmm(xf, valid) / count  # (B, C, 1)
        var = torch.bmm((xf - mean).square_(), valid) / count  # two-pass: no cancellation
        scale = torch.rsqrt(var + self.eps) * self.weight.float()[:, None]
        shift = self.bias.float()[:, None] - mean * scale
        return torch.addcmul(shift, xf, scale).to(dtype)
