"""``w2v embed --head``: the checkpoint's head run on each input, beside its layers.

The head runs on each input whole and alone (no padding, so every frame is valid; the
outputs equal :meth:`w2v.nn.model.Model.head` on the item alone), also for inputs whose
layers are computed in windows. Its outputs are float32 numpy arrays without the batch
axis; for a CTC head, the greedy transcript comes with them
(:func:`w2v.nn.heads.ctc.greedy_decode` over the checkpoint's vocabulary). Where they are
stored: :mod:`w2v.pipeline.outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from w2v.config import SAMPLE_RATE
from w2v.convert.outside import groups
from w2v.errors import AudioError, UsageError
from w2v.nn.heads.ctc import greedy_decode
from w2v.pipeline import audio
from w2v.pipeline.stream import placement


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


def run_head_alone(
    model: torch.nn.Module,
    path: str | Path,
    spec: HeadSpec,
    channel: int | None,
    max_samples: int | None = None,
) -> HeadResult:
    """Decode the audio file ``path`` as :func:`w2v.pipeline.stream.stream` does and run the
    head on it alone. Raises :class:`~w2v.errors.AudioError` for a file that cannot be
    read or is longer than ``max_samples`` at 16 kHz (the longest input the run computes
    whole: a head's attention over a longer one would take memory quadratic in its
    length), ValueError (x-vector: the input is too short) or RuntimeError from the model."""
    wave, _ = audio.load(
        path,
        channel=channel,
        normalize_input=bool(getattr(model, "normalize", False)),
        min_samples=int(model.config.receptive_field),
        max_whole=max_samples,
    )
    if isinstance(wave, audio.Overlong):
        raise AudioError(
            f"longer than {max_samples / SAMPLE_RATE:g} s, the longest input this run computes "
            "whole; --head runs each input whole (raise --chunk-seconds, or 0 for no limit)"
        )
    device, dtype = placement(model)
    x = torch.from_numpy(wave).to(device=device, dtype=dtype)[None]  # (1, samples)
    with torch.inference_mode():
        out: dict[str, Any] = model.head(x)
        text = None
        if spec.kind == "ctc" and spec.vocab is not None:
            [text] = greedy_decode(out["logits"], None, spec.vocab)
    arrays = {k: v[0].float().cpu().numpy() for k, v in out.items()}
    return HeadResult(arrays, text)
