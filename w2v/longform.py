"""Audio of any length: windows with context on both sides, stitched on the full-input frame grid.

Frame t of the full input covers samples ``[320 t, 320 t + 400)``. A window
starts on a multiple of the hop, so its frame j *is* full-input frame
``start / 320 + j`` as far as the conv encoder is concerned; only the
statistics of a group-norm first layer, the positional conv and attention see
less than the whole input. Each window contributes just its centre frames,
so the stitched result has exactly the full-input frame count and frame
times, and equals the full-context result when one window covers the input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from w2v.config import SAMPLE_RATE, num_frames

# Inputs longer than this are chunked automatically by `w2v embed` and `w2v.embed`.
AUTO_CHUNK_SECONDS = 120.0
DEFAULT_CHUNK_SECONDS = 30.0
DEFAULT_CONTEXT_SECONDS = 5.0


@dataclass(frozen=True)
class ChunkPolicy:
    """When to chunk: ``chunk_seconds`` None chunks inputs longer than
    :data:`AUTO_CHUNK_SECONDS` into :data:`DEFAULT_CHUNK_SECONDS` windows; 0 never
    chunks; a positive value chunks every input longer than it."""

    chunk_seconds: float | None = None
    context_seconds: float = DEFAULT_CONTEXT_SECONDS

    def __post_init__(self) -> None:
        if self.chunk_seconds is not None and self.chunk_seconds < 0:
            raise ValueError(f"chunk seconds must not be negative, got {self.chunk_seconds}")
        if self.context_seconds < 0:
            raise ValueError(f"context seconds must not be negative, got {self.context_seconds}")

    def chunk_for(self, samples: int) -> float | None:
        """Window centre length in seconds for an input of ``samples`` at 16 kHz, or None (whole)."""
        seconds = samples / SAMPLE_RATE
        if self.chunk_seconds is None:
            return DEFAULT_CHUNK_SECONDS if seconds > AUTO_CHUNK_SECONDS else None
        if self.chunk_seconds == 0 or seconds <= self.chunk_seconds:
            return None
        return self.chunk_seconds


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` of the input are computed from window frames ``[first, last)``;
    the centre ``[keep_start, keep_stop)`` (input frames) is kept."""

    first: int
    last: int
    keep_start: int
    keep_stop: int


def plan_windows(total_frames: int, chunk_frames: int, context_frames: int) -> list[Window]:
    """Cover ``total_frames`` with centres of ``chunk_frames`` and up to ``context_frames`` each side."""
    if chunk_frames < 1:
        raise ValueError(f"chunk must be at least one frame (20 ms), got {chunk_frames} frames")
    if context_frames < 0:
        raise ValueError(f"context must not be negative, got {context_frames} frames")
    windows = []
    for start in range(0, total_frames, chunk_frames):
        stop = min(start + chunk_frames, total_frames)
        windows.append(
            Window(
                max(0, start - context_frames),
                min(total_frames, stop + context_frames),
                start,
                stop,
            )
        )
    return windows


def iter_chunks(
    model,
    waveform: torch.Tensor,
    layers: Sequence[int] | None = None,
    *,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Yield ``(first_frame, states)`` for consecutive stretches of a long input.

    waveform: (samples,) at 16 kHz. ``states`` holds one (frames, dim) tensor per
    requested layer index (as in :meth:`Model.hidden_states`). Peak memory is
    that of one window, whatever the input length: the model runs under
    :func:`torch.no_grad`, so no autograd graph is kept (the states do not
    require grad, and gradients cannot flow through them); the caller's grad
    mode is left as it was between windows.
    """
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(
            f"waveform must be a torch.Tensor (samples,), got {type(waveform).__name__}"
        )
    if waveform.dim() != 1:
        raise ValueError(f"waveform must be (samples,), got shape {tuple(waveform.shape)}")
    config = model.config
    hop, field = config.hop_length, config.receptive_field
    total = num_frames(waveform.shape[0], config)
    if total == 0:
        raise ValueError(
            f"input has {waveform.shape[0]} samples; the model needs at least {field} "
            f"({field / SAMPLE_RATE * 1000:.0f} ms at 16 kHz)"
        )
    frames_per_second = SAMPLE_RATE / hop
    chunk = round(chunk_seconds * frames_per_second)
    context = round(context_seconds * frames_per_second)
    for w in plan_windows(total, chunk, context):
        # samples that produce exactly window frames [first, last); the last window
        # keeps the trailing samples too, which a group-norm first layer's statistics see
        end = waveform.shape[0] if w.last == total else (w.last - 1) * hop + field
        segment = waveform[w.first * hop : end]
        # a graph per window would keep every window's activations alive for as long as
        # the caller keeps the states; the `with` closes before the yield, so the
        # caller's own code never runs under no_grad
        with torch.no_grad():
            states, _ = model.hidden_states(segment[None], None, layers)
        lo, hi = w.keep_start - w.first, w.keep_stop - w.first
        yield w.keep_start, [s[0, lo:hi] for s in states]


def hidden_states_long(
    model,
    waveform: torch.Tensor,
    layers: Sequence[int] | None = None,
    *,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
) -> list[torch.Tensor]:
    """Chunked :meth:`Model.hidden_states` for one long input: one (frames, dim) tensor per layer.

    Frame count and frame times equal the full-context ones. No autograd graph is
    built (see :func:`iter_chunks`). The stitched result grows with the input;
    pool with :func:`iter_chunks` to stay bounded.
    """
    parts: list[list[torch.Tensor]] = []
    for _, states in iter_chunks(
        model, waveform, layers, chunk_seconds=chunk_seconds, context_seconds=context_seconds
    ):
        parts.append(states)
    return [torch.cat(p, dim=0) for p in zip(*parts, strict=True)]
