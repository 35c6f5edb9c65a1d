"""Task heads of fine-tuned checkpoints, each a small module built from a
:class:`HeadConfig` and the backbone's :class:`~w2v.config.Config`.

======================== ============================== =====================================
kind                     transformers class             outputs of :func:`run_head`
======================== ============================== =====================================
sequence_classification  ``*ForSequenceClassification`` logits (B, labels)
frame_classification     ``*ForAudioFrameClassification`` logits (B, T, labels), 0 on padding
xvector                  ``*ForXVector``                embeddings and logits (B, xvector dim)
speech_classification    ``*ForSpeechClassification``   logits (B, labels)
                         (community notebook class)
(CTC, ``model.lm_head``) ``*ForCTC``                    logits (B, T, vocab)
======================== ============================== =====================================

A head's state-dict keys are the transformers checkpoint's keys outside the backbone
prefix (``wav2vec2.`` etc.), unchanged: ``layer_weights``, ``projector.*``,
``classifier.*`` (the notebook's ``classifier.dense.*`` / ``classifier.out_proj.*``),
``tdnn.{i}.kernel.*``, ``feature_extractor.*``, ``objective.weight``.

The input a head reads is what transformers feeds it: the model output (for pre-LN models
after the encoder's final LayerNorm), or with ``use_weighted_layer_sum`` the softmax-weighted
sum of hidden states 0..N as :meth:`~w2v.nn.model.Model.hidden_states` returns them
(transformers' ``hidden_states`` tuple, whose last entry has no final LayerNorm).

Outputs are batch-invariant: pooling reads each item's valid frames only, so an item in a
padded batch with ``lengths`` gets its numbers alone. Transformers' batched numbers differ:

* without ``attention_mask`` (the usual call for group-norm models such as
  wav2vec2-base, whose feature extractors return none) every head pools over the padding;
* the x-vector head counts valid TDNN outputs as ``frames - (kernel - 1)`` per layer,
  ignoring the dilation, so with the default dilations (1, 2, 3, 1, 1) a padded item's
  statistics take in 6 frames that read padding;
* the community speech-classification head pools over every frame, padding included,
  whatever the mask.

Run alone (no padding), each item matches transformers within float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from w2v.config import Config
from w2v.nn.heads.classification import (
    FrameClassification,
    Head,
    SequenceClassification,
    SpeechClassification,
)
from w2v.nn.heads.config import KINDS, POOLING_MODES, HeadConfig, head_config_from_hf, head_kind
from w2v.nn.heads.pooling import weighted_layer_sum
from w2v.nn.heads.xvector import XVector

if TYPE_CHECKING:
    from w2v.nn.model import Model

HEADS: dict[str, type[Head]] = {
    "sequence_classification": SequenceClassification,
    "frame_classification": FrameClassification,
    "xvector": XVector,
    "speech_classification": SpeechClassification,
}


def build_head(head_config: HeadConfig, config: Config) -> Head:
    """The head module of ``head_config`` on a backbone of ``config`` (random weights; load
    the checkpoint's head keys with ``load_state_dict(strict=True)``)."""
    return HEADS[head_config.kind](head_config, config)


def head_layers(model: Model, head: Head | None) -> list[int]:
    """The hidden-state indices ``head`` reads (None: the CTC head): all of 0..N for a
    weighted layer sum, else N."""
    n = model.config.num_layers
    weighted = head is not None and head.layer_weights is not None
    return list(range(n + 1)) if weighted else [n]


def head_features(model: Model, head: Head | None, states: Sequence[torch.Tensor]) -> torch.Tensor:
    """The head's input (batch, frames, hidden) from the states at
    :func:`head_layers`: their weighted sum, or layer N after the encoder's final norm (the
    model output, as transformers' heads and ``Model.forward`` take it)."""
    if head is not None and head.layer_weights is not None:
        return weighted_layer_sum(states, head.layer_weights)
    return model.encoder.finish(states[0])


def head_input(
    model: Model,
    head: Head | None,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the backbone for ``head``: (batch, samples) → the head's input (batch, frames,
    hidden) and valid frames per item (None without ``lengths``). No layer is computed twice
    and none past the last."""
    states, frame_lengths = model.hidden_states(waveforms, lengths, head_layers(model, head))
    return head_features(model, head, states), frame_lengths


def run_head(
    model: Model,
    head: Head | None,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """The head's outputs for (batch, samples) waveforms at 16 kHz, right-padded, with
    ``lengths`` (batch,) valid samples per item: ``{"logits": ...}`` for every head, plus
    ``{"embeddings": ...}`` for x-vector (shapes in the module docstring).

    ``head=None`` runs the model's CTC head (``model.lm_head``): per-frame logits, padded
    frames included (finite garbage). ValueError when there is no head to run.
    """
    if head is None:
        if model.lm_head is None:
            raise ValueError("this model has no head: neither a task head nor a CTC head")
        logits, _ = model(waveforms, lengths)
        return {"logits": logits}
    x, frame_lengths = head_input(model, head, waveforms, lengths)
    return head(x, frame_lengths)


__all__ = [
    "HEADS",
    "KINDS",
    "POOLING_MODES",
    "FrameClassification",
    "Head",
    "HeadConfig",
    "SequenceClassification",
    "SpeechClassification",
    "XVector",
    "build_head",
    "head_config_from_hf",
    "head_features",
    "head_input",
    "head_layers",
    "head_kind",
    "run_head",
]
