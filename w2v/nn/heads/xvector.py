"""The x-vector head (transformers' ``*ForXVector``): projector → TDNN layers → statistics
pooling → embedding → logits.

Submodule names are transformers' own (``projector``, ``tdnn.{i}.kernel``,
``feature_extractor``, ``classifier``, ``objective``), so the state dict has exactly the
checkpoint's head keys.
"""

from __future__ import annotations

import torch
from torch import nn

from w2v.config import Config
from w2v.nn.heads.classification import Head
from w2v.nn.heads.config import HeadConfig
from w2v.nn.heads.pooling import masked_mean_std


class TDNNLayer(nn.Module):
    """A dilated 1-d convolution without padding, then ReLU: (B, T, C_in) → (B, T - span, C_out)
    with ``span = (kernel - 1) * dilation``.

    The convolution is written as what the checkpoint stores, one Linear over the
    concatenated taps: ``kernel.weight`` (C_out, kernel * C_in) is tap-major, so output
    frame t reads ``[x[t], x[t + d], ..., x[t + (kernel - 1) d]]``.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int, dilation: int):
        super().__init__()
        self.kernel_size = kernel
        self.dilation = dilation
        self.kernel = nn.Linear(in_dim * kernel, out_dim)

    @property
    def span(self) -> int:
        """Frames the layer removes."""
        return (self.kernel_size - 1) * self.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1] - self.span
        taps = [
            x[:, j * self.dilation : j * self.dilation + frames] for j in range(self.kernel_size)
        ]
        # (B, frames, kernel * C_in) → (B, frames, C_out)
        return torch.relu(self.kernel(torch.cat(taps, dim=-1)))


class AMSoftmaxWeights(nn.Module):
    """The AM-softmax training objective's class weights ``weight`` (embedding, labels), kept
    so the state dict is complete; inference does not read them (the loss is not computed)."""

    def __init__(self, dim: int, num_labels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim, num_labels))


class XVector(Head):
    """(B, T, D) → ``{"embeddings": (B, xvector_output_dim), "logits": (B, xvector_output_dim)}``.

    Statistics pooling is the mean and the sample standard deviation (divide by count - 1,
    as ``torch.std``) over each item's valid frames after the TDNN stack, which removes
    :attr:`span` frames. ``logits`` is transformers' ``classifier(embeddings)``, as wide as
    the embedding (the per-speaker scores live in the training objective); the embedding is
    the useful output.
    """

    def __init__(self, head_config: HeadConfig, config: Config):
        super().__init__(head_config, config)
        dims, kernels, dilations = (
            head_config.tdnn_dim,
            head_config.tdnn_kernel,
            head_config.tdnn_dilation,
        )
        out = head_config.xvector_output_dim
        self.projector = nn.Linear(config.hidden_size, dims[0])
        inputs = (dims[0],) + dims[:-1]
        self.tdnn = nn.ModuleList(
            TDNNLayer(i, o, k, d)
            for i, o, k, d in zip(inputs, dims, kernels, dilations, strict=True)
        )
        self.feature_extractor = nn.Linear(2 * dims[-1], out)
        self.classifier = nn.Linear(out, out)
        self.objective = AMSoftmaxWeights(out, head_config.num_labels)
        # shortest item, in model frames and input samples: statistics need 2 TDNN outputs
        self.min_frames = self.span + 2
        self.min_samples = config.receptive_field + (self.min_frames - 1) * config.hop_length

    @property
    def span(self) -> int:
        """Frames the TDNN stack removes: valid frames out = valid frames in - span."""
        return sum(layer.span for layer in self.tdnn)

    def forward(
        self, x: torch.Tensor, frame_lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        frames = torch.full(x.shape[:1], x.shape[1]) if frame_lengths is None else frame_lengths
        short = (frames < self.min_frames).nonzero().flatten()
        if len(short):
            raise ValueError(
                f"the x-vector head needs at least {self.min_frames} frames "
                f"({self.min_samples} samples at 16 kHz) per item; batch items "
                f"{short.tolist()} are shorter"
            )
        x = self.projector(x)
        for layer in self.tdnn:
            x = layer(x)  # (B, T - span_i, C_i)
        lengths = None if frame_lengths is None else frame_lengths - self.span
        mean, std = masked_mean_std(x, lengths)
        embeddings = self.feature_extractor(torch.cat([mean, std], dim=-1))
        return {"logits": self.classifier(embeddings), "embeddings": embeddings}
