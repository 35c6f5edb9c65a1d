"""The run options ``w2v embed`` and ``w2v.embed`` share, checked before anything is loaded.

Each check names the option and what it accepts: :class:`~w2v.errors.UsageError` (a
ValueError) for a value out of range, TypeError for a value of the wrong type. A value
that would fail the same way on every input (a window shorter than one frame, an
infinite context) is one error up front, not one per input.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from w2v.errors import UsageError, quoted
from w2v.longform import ChunkPolicy
from w2v.pipeline.audio import MAX_AUDIO_SECONDS

MIN_CHUNK_SECONDS = 0.02
"""The shortest window (``chunk_seconds``) other than 0 (never chunk): one model frame."""

MAX_WORKERS = 64
"""The most audio decoding threads a run may ask for: each holds a decoded file in memory,
and more than a few never make decoding faster."""


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {quoted(value, 40)}")
    return float(value)


def check_batch_seconds(value: Any) -> float | None:
    """``batch_seconds``: None (the device's default) or a finite number above 0."""
    if value is None:
        return None
    seconds = _number("batch seconds", value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"batch seconds must be positive and finite, got {seconds}")
    return seconds


def chunk_policy(chunk_seconds: Any, context_seconds: Any) -> ChunkPolicy:
    """The :class:`~w2v.longform.ChunkPolicy` for these options. ``chunk_seconds``: None
    (the default policy), 0 (never chunk) or :data:`MIN_CHUNK_SECONDS` to
    :data:`~w2v.pipeline.audio.MAX_AUDIO_SECONDS`; ``context_seconds``: 0 to
    ``MAX_AUDIO_SECONDS`` (longer than any input w2v reads, so nothing larger means more)."""
    if chunk_seconds is not None:
        chunk = _number("chunk seconds", chunk_seconds)
        if chunk < 0:
            raise UsageError(f"chunk seconds must not be negative, got {chunk}")
        if not (chunk == 0 or MIN_CHUNK_SECONDS <= chunk <= MAX_AUDIO_SECONDS):
            raise UsageError(
                f"chunk seconds must be 0 (never chunk) or {MIN_CHUNK_SECONDS:g} (one frame) "
                f"to {MAX_AUDIO_SECONDS:g} (the longest audio w2v reads), got {chunk}"
            )
        chunk_seconds = chunk
    context = _number("context seconds", context_seconds)
    if context < 0:
        raise UsageError(f"context seconds must not be negative, got {context}")
    if context > MAX_AUDIO_SECONDS:
        raise UsageError(
            f"context seconds must be 0 to {MAX_AUDIO_SECONDS:g} (the longest audio w2v "
            f"reads), got {context}"
        )
    return ChunkPolicy(chunk_seconds, context)


def check_workers(value: Any) -> int | None:
    """``workers``: None or 0 (the default for the device) or 1 to :data:`MAX_WORKERS`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"workers must be an integer, got {type(value).__name__} {quoted(value)}")
    if not 0 <= value <= MAX_WORKERS:
        raise UsageError(
            f"workers must be 1 to {MAX_WORKERS} decoding threads (0: the default), got {value}"
        )
    return int(value)


def check_channel(value: Any) -> int | None:
    """``channel``: None (the mean of all channels) or an integer (negatives count from the
    last channel; a file without that channel is an error for that file alone)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"channel must be an integer, got {type(value).__name__} {quoted(value)}")
    return int(value)
