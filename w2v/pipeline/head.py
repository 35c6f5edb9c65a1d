"""``w2v embed --head``: the checkpoint's head run on each input, beside its layers.

The head runs in the batch that computes the layers, from the same backbone run
(:func:`layers_and_head`): its input comes from hidden states requested in the same call.
Heads read each item's valid frames only, so the outputs equal
:meth:`w2v.nn.model.Model.head` on the item alone. Inputs whose layers are computed in
windows get an error instead (:func:`too_long`): a head's attention over the whole input
would take memory quadratic in its length. Outputs are float32 numpy arrays without the
batch axis, per-frame ones cut to the item's valid frames; for a CTC head, the greedy
transcript comes with them (:func:`w2v.nn.heads.ctc.greedy_decode` over the checkpoint's
vocabulary). Where they are stored: :mod:`w2v.pipeline.outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from w2v.config import SAMPLE_RATE
from w2v.convert.outside import groups
from w2v.errors import UsageError, one_line
from w2v.nn.heads import head_features, head_layers
from w2v.nn.heads.ctc import greedy_decode


@dataclass(frozen=True)
class HeadSpec:
    """The head a run writes: its ``kind`` (a :data:`w2v.nn.heads.KINDS` name or ``"ctc"``),
    ``labels`` (the logits' column names: ``id2label`` or the CTC vocabulary; None when the
    checkpoint names none) and, for CTC, the ``vocab`` transcripts are decoded with."""

    kind: str
    labels: list[str] | None
    vocab: list[str] | None = None


@dataclass(frozen=True)
class HeadResult:
    """One input's head outputs (``"logits"``, and ``"embeddings"`` for x-vector) and, for
    CTC with a vocabulary, its transcript."""

    outputs: dict[str, np.ndarray]
    text: str | None = None


class HeadError(RuntimeError):
    """The head failed on a batch whose backbone ran (x-vector: an input too short); the
    message says ``head:``, the cause is the head's own exception."""


def head_spec(model: torch.nn.Module) -> HeadSpec:
    """What ``--head`` writes for ``model``; :class:`UsageError` naming what the checkpoint
    has when it has no head w2v runs."""
    kind = getattr(model, "head_kind", None)
    if kind is None:
        unused = tuple(getattr(model, "unused", ()))
        has = (
            f"weights outside the encoder that are no head w2v runs: {groups(unused)}"
            if unused
            else "no head (an encoder only)"
        )
        raise UsageError(
            f"--head: the model has {has}; --head needs a fine-tuned checkpoint with a "
            "sequence or frame classification, x-vector, speech classification or CTC head"
        )
    if kind == "ctc":
        vocab = model.vocab
        return HeadSpec(kind, vocab, vocab)
    id2label = model.id2label
    return HeadSpec(kind, None if id2label is None else [id2label[i] for i in sorted(id2label)])


def too_long(max_samples: int) -> HeadError:
    """The error of an input longer than ``max_samples`` at 16 kHz, the longest the run
    computes whole: its layers would be computed in windows, and the head needs it whole."""
    return HeadError(
        f"head: longer than {max_samples / SAMPLE_RATE:g} s, the longest input this run "
        "computes whole; --head runs each input whole (raise --chunk-seconds, or 0 for no limit)"
    )


def layers_and_head(
    model: torch.nn.Module,
    x: torch.Tensor,
    lengths: torch.Tensor,
    layers: list[int],
    spec: HeadSpec,
) -> tuple[list[torch.Tensor], torch.Tensor, list[HeadResult]]:
    """One backbone run for the layers and the head: (batch, samples) waveforms with
    ``lengths`` (batch,) valid samples → the states at ``layers`` (each (batch, frames,
    dim), as :meth:`~w2v.nn.model.Model.hidden_states` gives them), the valid frames per
    item (batch,), and each item's :class:`HeadResult`.

    The head's input is :func:`w2v.nn.heads.head_features` of the states
    :func:`~w2v.nn.heads.head_layers` names, asked for in the same call. Raises :class:`HeadError` when the head fails after the backbone
    ran (run under ``torch.inference_mode``: no graph is kept)."""
    head = model.task_head
    extra = head_layers(model, head)
    states, frame_lengths = model.hidden_states(x, lengths, [*layers, *extra])
    states, needed = states[: len(layers)], states[len(layers) :]
    try:
        h = head_features(model, head, needed)
        # no task head: the CTC head on the model output, as Model.forward applies it
        out = {"logits": model.lm_head(h)} if head is None else head(h, frame_lengths)
        texts = [None] * x.shape[0]
        if spec.kind == "ctc" and spec.vocab is not None:
            texts = greedy_decode(out["logits"], frame_lengths, spec.vocab)
    except Exception as e:
        raise HeadError(f"head: {one_line(e)}") from e
    results = []
    for b, (frames, text) in enumerate(zip(frame_lengths.tolist(), texts, strict=True)):
        # (batch, frames, ...) outputs are per frame (frame classification, CTC): cut padding
        arrays = {
            k: (v[b, :frames] if v.dim() == 3 else v[b]).float().cpu().numpy()
            for k, v in out.items()
        }
        results.append(HeadResult(arrays, text))
    return states, frame_lengths, results
