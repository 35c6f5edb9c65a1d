"""Classification heads: per utterance (transformers' ``*ForSequenceClassification`` and the
community ``*ForSpeechClassification``) and per frame (``*ForAudioFrameClassification``).

Submodule names are transformers' own, so a head's state dict has exactly the head keys
of the transformers checkpoint (the keys outside the backbone prefix). Inference only:
no dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from w2v.config import Config
from w2v.nn.functional import frame_mask
from w2v.nn.heads.config import HeadConfig
from w2v.nn.heads.pooling import masked_max, masked_mean, masked_sum

_POOL = {"mean": masked_mean, "sum": masked_sum, "max": masked_max}


class Head(nn.Module):
    """What every head has: its config, and the learned ``layer_weights`` (N + 1,) when it
    reads a weighted sum of hidden states 0..N rather than the model output (None then).

    ``forward(x, frame_lengths)``: x (batch, frames, hidden) is the head's input (see
    :func:`w2v.nn.heads.head_input`), frame_lengths (batch,) the valid frames per item or
    None when all are valid; returns a dict of outputs, ``"logits"`` always.
    """

    def __init__(self, head_config: HeadConfig, config: Config):
        super().__init__()
        self.head_config = head_config
        n = config.num_layers + 1  # hidden states 0..N
        self.layer_weights = (
            nn.Parameter(torch.full((n,), 1.0 / n)) if head_config.use_weighted_layer_sum else None
        )


class SequenceClassification(Head):
    """``projector`` → mean over valid frames → ``classifier``: (B, T, D) → logits (B, labels)."""

    def __init__(self, head_config: HeadConfig, config: Config):
        super().__init__(head_config, config)
        self.projector = nn.Linear(config.hidden_size, head_config.classifier_proj_size)
        self.classifier = nn.Linear(head_config.classifier_proj_size, head_config.num_labels)

    def forward(
        self, x: torch.Tensor, frame_lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        pooled = masked_mean(self.projector(x), frame_lengths)  # (B, P)
        return {"logits": self.classifier(pooled)}


class FrameClassification(Head):
    """``classifier`` on every frame: (B, T, D) → logits (B, T, labels); 0 on padded frames."""

    def __init__(self, head_config: HeadConfig, config: Config):
        super().__init__(head_config, config)
        self.classifier = nn.Linear(config.hidden_size, head_config.num_labels)

    def forward(
        self, x: torch.Tensor, frame_lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        logits = self.classifier(x)  # (B, T, labels)
        if frame_lengths is not None:
            # padded frames' logits are finite garbage; zeros make the output deterministic
            valid = frame_mask(frame_lengths.to(x.device), x.shape[1])
            logits = torch.where(valid[..., None], logits, 0.0)
        return {"logits": logits}


class SpeechClassifier(nn.Module):
    """``dense`` → tanh → ``out_proj`` (the notebook's ``classifier`` submodule)."""

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(x)))


class SpeechClassification(Head):
    """The community ``Wav2Vec2ForSpeechClassification`` head: ``pooling_mode`` (mean, sum or
    max) over the valid frames of the model output → ``classifier.dense`` → tanh →
    ``classifier.out_proj``: (B, T, D) → logits (B, labels).

    The notebook pools over every frame it is given, padding included, so its batched
    numbers depend on the padding; here padding never enters the pooling.
    """

    def __init__(self, head_config: HeadConfig, config: Config):
        super().__init__(head_config, config)
        self.pool = _POOL[head_config.pooling_mode]
        self.classifier = SpeechClassifier(config.hidden_size, head_config.num_labels)

    def forward(
        self, x: torch.Tensor, frame_lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {"logits": self.classifier(self.pool(x, frame_lengths))}
