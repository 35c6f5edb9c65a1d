"""Audio of any length: windows with context on both sides, stitched on the full-input frame grid.

Frame t of the full input covers samples ``[320 t, 320 t + 400)``. A window
starts on a multiple of the hop, so its frame j *is* full-input frame
``start / 320 + j`` as far as the conv encoder is concerned; only the
statistics of a group-norm first layer, the positional conv and attention see
less than the whole input. Each window contributes just its centre frames,
so the stitched result has exactly the full-input frame count and frame
times, and equals the full-context result when one window covers the input.

The input is either one tensor (:func:`iter_chunks`) or a stream of consecutive
blocks whose total length is known (:func:`iter_chunks_stream`, for files too long
to hold): the windows, and so the results, are the same; the stream holds only
what the current window needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
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
        if self.chunk_seconds is not None and not self.chunk_seconds >= 0:  # NaN too
            raise ValueError(f"chunk seconds must not be negative, got {self.chunk_seconds}")
        if not self.context_seconds >= 0:
            raise ValueError(f"context seconds must not be negative, got {self.context_seconds}")

    def whole_limit(self) -> int | None:
        """The most samples at 16 kHz an input may have and still be computed whole
        (:meth:`chunk_for` gives None up to it, and one window length past it); None: no limit."""
        seconds = AUTO_CHUNK_SECONDS if self.chunk_seconds is None else self.chunk_seconds
        if seconds == 0 or not math.isfinite(seconds):
            return None
        n = int(seconds * SAMPLE_RATE)
        while self.chunk_for(n + 1) is None:  # float rounding at the boundary
            n += 1
        while n > 0 and self.chunk_for(n) is not None:
            n -= 1
        return n

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


def _segments(
    config, samples: int, chunk_seconds: float, context_seconds: float
) -> Iterator[tuple[Window, int, int]]:
    """Per window, the samples ``[start, end)`` of an input of ``samples`` that it is computed from."""
    hop, field = config.hop_length, config.receptive_field
    total = num_frames(samples, config)
    if total == 0:
        raise ValueError(
            f"input has {samples} samples; the model needs at least {field} "
            f"({field / SAMPLE_RATE * 1000:.0f} ms at 16 kHz)"
        )
    frames_per_second = SAMPLE_RATE / hop
    chunk = round(chunk_seconds * frames_per_second)
    context = round(context_seconds * frames_per_second)
    for w in plan_windows(total, chunk, context):
        # samples that produce exactly window frames [first, last); the last window
        # keeps the trailing samples too, which a group-norm first layer's statistics see
        end = samples if w.last == total else (w.last - 1) * hop + field
        yield w, w.first * hop, end


def _window_states(
    model, segment: torch.Tensor, w: Window, layers: Sequence[int] | None
) -> list[torch.Tensor]:
    """The kept centre of one window: one (frames, dim) tensor per layer."""
    # a graph per window would keep every window's activations alive for as long as
    # the caller keeps the states; the `with` closes before the caller sees them, so
    # the caller's own code never runs under no_grad
    with torch.no_grad():
        states, _ = model.hidden_states(segment[None], None, layers)
    lo, hi = w.keep_start - w.first, w.keep_stop - w.first
    return [s[0, lo:hi] for s in states]


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
    for w, start, end in _segments(model.config, waveform.shape[0], chunk_seconds, context_seconds):
        yield w.keep_start, _window_states(model, waveform[start:end], w, layers)


def iter_chunks_stream(
    model,
    blocks: Iterable[torch.Tensor],
    samples: int,
    layers: Sequence[int] | None = None,
    *,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """:func:`iter_chunks` of an input that arrives in pieces: ``blocks`` are consecutive
    (k,) tensors at 16 kHz making up ``samples`` samples in all.

    Yields what :func:`iter_chunks` yields for the blocks joined, while holding only the
    current window's samples and the block that ends it. ValueError when the blocks
    hold other than ``samples`` samples (after the last window, they are read to the end).
    """
    held = _Held(iter(blocks))
    for w, start, end in _segments(model.config, samples, chunk_seconds, context_seconds):
        yield w.keep_start, _window_states(model, held.take(start, end), w, layers)
    if held.start + held.samples.shape[0] != samples or next(held.blocks, None) is not None:
        raise ValueError(f"the input holds more than the {samples} samples announced")


class _Held:
    """The samples ``[start, start + len)`` of a block stream that windows still need."""

    def __init__(self, blocks: Iterator[torch.Tensor]) -> None:
        self.blocks = blocks
        self.start = 0
        self.samples: torch.Tensor | None = None

    def take(self, start: int, end: int) -> torch.Tensor:
        """Samples ``[start, end)``; ``start`` never goes back (windows come in order), so
        what lies before it is let go."""
        parts = [] if self.samples is None else [self.samples[start - self.start :]]
        self.start = start
        have = start + sum(p.shape[0] for p in parts)
        while have < end:
            block = next(self.blocks, None)
            if block is None:
                raise ValueError(f"the input ended after {have} samples; {end} were needed")
            parts.append(block)
            have += block.shape[0]
        self.samples = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self.samples[: end - start]


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
