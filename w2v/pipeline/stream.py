"""The batch stream both entry points share: decode ahead → model → pooled arrays.

:func:`stream` plans batches of similar length (:mod:`w2v.pipeline.batching`),
decodes them ahead on a thread pool, runs each batch through the model and
pools it (:mod:`w2v.pipeline.pooling`). A batch that fails is retried item by
item, so a failure costs only the item it belongs to; an input longer than the
chunking policy allows runs alone in windows with context (:mod:`w2v.longform`).
A file that long is never held whole: read-ahead only measures it (length, checks,
normalisation statistics: :class:`~w2v.pipeline.long_audio.LongAudio`), and its windows
are decoded again as the model reaches them, so memory follows the window, not the file.
Per item it yields a result or the exception that item met, never raising for
one input. Given a :class:`~w2v.pipeline.head.HeadSpec`, each batch also runs the
checkpoint's head from the same backbone run (:func:`w2v.pipeline.head.layers_and_head`),
so each input is decoded once and the backbone runs once; an input that would be computed
in windows is then that input's error (:func:`w2v.pipeline.head.too_long`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from w2v import allocator
from w2v.config import SAMPLE_RATE
from w2v.errors import AudioError, UsageError, one_line
from w2v.longform import ChunkPolicy, iter_chunks, iter_chunks_stream
from w2v.pipeline import audio, long_audio
from w2v.pipeline.audio import AudioInfo
from w2v.pipeline.batching import (
    default_batch_seconds,
    default_workers,
    pad,
    plan_batches,
    prefetch,
)
from w2v.pipeline.head import HeadError, HeadResult, HeadSpec, layers_and_head, too_long
from w2v.pipeline.pooling import RunningPool, pool_layers


class Result(NamedTuple):
    """One item's pooled array ``(layers, ...)``, its number of valid frames, the
    ``(chunk_seconds, context_seconds)`` of the windows it was computed in (None: whole),
    and its head outputs when the run asked for them (None otherwise)."""

    array: np.ndarray
    frames: int
    window: tuple[float, float] | None = None
    head: HeadResult | None = None


@dataclass
class Source:
    """One thing to embed: a file or an in-memory mono waveform at ``rate``."""

    path: Path | None = None
    wave: np.ndarray | None = None
    rate: int | None = None
    samples_16k: int = 0  # estimated, for planning


@dataclass
class Clock:
    """Where a stream's time went: in the model (batches and windows, pooling included)
    and waiting for decoded audio (the model idle because read-ahead fell behind)."""

    model: float = 0.0
    waiting: float = 0.0


def placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first parameter (the first conv): the waveform's."""
    p = next(model.parameters())
    return p.device, p.dtype


def decode_workers(model: torch.nn.Module, workers: int | None) -> int:
    """``workers``, or the default for where the model runs (see
    :func:`w2v.pipeline.batching.default_workers`). Torch's own thread count is left as it
    is: decoding needs little CPU, so reserving cores for it would leave them idle. On a
    machine another process keeps busy, fewer torch threads (``torch.set_num_threads`` or
    ``OMP_NUM_THREADS``) can be faster."""
    return workers or default_workers(placement(model)[0].type)


def smoke_test(model: torch.nn.Module, layers: list[int], pool: str) -> None:
    """Run the model once on silence, so that a device or dtype it cannot run on is one
    usage error up front rather than the same error for every input."""
    silence = np.zeros(int(model.config.receptive_field), np.float32)
    try:
        run_batch(model, [silence], layers, pool)
    except Exception as e:  # noqa: BLE001
        device, dtype = placement(model)
        raise UsageError(
            f"the model cannot run on {device} in {str(dtype).removeprefix('torch.')}: "
            f"{one_line(e)}"
        ) from None


def run_batch(
    model: torch.nn.Module,
    waves: Sequence[np.ndarray],
    layers: list[int],
    pool: str,
    head: HeadSpec | None = None,
) -> list[Result]:
    """One padded batch through the model; per item ``(array, frames)``, and with ``head``
    the head's outputs from the same backbone run (:class:`~w2v.pipeline.head.HeadError`
    when the head fails).

    ``waves``: 16 kHz mono float32 ``(samples,)`` each, already checked and
    normalised. The array is ``(layers, dim)`` pooled or ``(layers, frames, dim)``.
    """
    device, dtype = placement(model)
    x, lengths = pad(waves)  # (B, S), (B,)
    x = x.to(device=device, dtype=dtype, non_blocking=True)
    lengths = lengths.to(device)
    with torch.inference_mode():
        if head is None:
            states, frame_lengths = model.hidden_states(x, lengths, layers=layers)
            heads = [None] * len(waves)
        else:
            states, frame_lengths, heads = layers_and_head(model, x, lengths, layers, head)
        arrays = pool_layers(states, frame_lengths, pool)
    return [
        Result(a, n, head=h) for a, n, h in zip(arrays, frame_lengths.tolist(), heads, strict=True)
    ]


def run_long(
    model: torch.nn.Module,
    wave: np.ndarray | long_audio.LongAudio,
    layers: list[int],
    pool: str,
    chunk_seconds: float,
    context_seconds: float,
    clock: Clock | None = None,
) -> Result:
    """One long input in windows with context (:mod:`w2v.longform`), pooled as it streams.

    ``wave``: the samples ``(samples,)``, or a :class:`~w2v.pipeline.long_audio.LongAudio`
    decoded block by block as the windows need it (the same result). ``clock``
    (optional) gets the time spent waiting for those blocks.
    """
    device, dtype = placement(model)
    acc = RunningPool(pool)
    kw = dict(chunk_seconds=chunk_seconds, context_seconds=context_seconds)
    with torch.inference_mode():
        if isinstance(wave, long_audio.LongAudio):
            blocks = (
                torch.from_numpy(b).to(device=device, dtype=dtype)
                for b in _timed(wave.blocks(), clock or Clock())
            )
            windows = iter_chunks_stream(model, blocks, wave.samples, layers, **kw)
        else:
            x = torch.from_numpy(wave).to(device=device, dtype=dtype)
            windows = iter_chunks(model, x, layers, **kw)
        for _, states in windows:
            acc.update(states)
    return Result(acc.result(), acc.frames, (chunk_seconds, context_seconds))


def _timed(blocks: Iterator[np.ndarray], clock: Clock) -> Iterator[np.ndarray]:
    """``blocks``, adding the time spent producing each to ``clock.waiting``."""
    while True:
        start = time.perf_counter()
        block = next(blocks, None)
        clock.waiting += time.perf_counter() - start
        if block is None:
            return
        yield block


def run_items(
    model: torch.nn.Module,
    waves: Sequence[np.ndarray],
    layers: list[int],
    pool: str,
    head: HeadSpec | None = None,
) -> list[Result | Exception]:
    """:func:`run_batch`, falling back to one item at a time when the batch fails.

    A failure that belongs to one item (or an out-of-memory batch) then costs
    only that item; with ``head``, a head that fails on one item too (x-vector:
    an input too short for it).
    """
    if not waves:
        return []
    try:
        return list(run_batch(model, waves, layers, pool, head))
    except Exception as e:  # noqa: BLE001 - retried item by item below
        if len(waves) == 1:
            return [_model_error(e)]
        _free_memory()
    out: list[Result | Exception] = []
    for w in waves:
        try:
            out.extend(run_batch(model, [w], layers, pool, head))
        except Exception as e:  # noqa: BLE001
            _free_memory()
            out.append(_model_error(e))
    return out


def _model_error(e: Exception) -> Exception:
    cause = e.__cause__ if isinstance(e, HeadError) else e
    if isinstance(cause, torch.OutOfMemoryError):
        return RuntimeError(
            "out of memory running the model on this input; lower --batch-seconds "
            "or use a smaller --dtype"
        )
    if isinstance(e, HeadError):  # its message says "head:" already
        return e
    return RuntimeError(f"model failed: {one_line(e)}")


def _free_memory() -> None:
    # a failed batch leaves its activations in the caching allocator; the retry needs them
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stream(
    model: torch.nn.Module,
    sources: Sequence[Source],
    layers: list[int],
    pool: str,
    *,
    batch_seconds: float | None,
    channel: int | None,
    workers: int | None,
    chunking: ChunkPolicy,
    notice: Callable[[str], None],
    clock: Clock | None = None,
    head: HeadSpec | None = None,
    plan: Sequence[Sequence[int]] | None = None,
) -> Iterator[tuple[int, Result | Exception, AudioInfo | None]]:
    """Yield ``(source index, (array, frames) or the exception, decoded AudioInfo or None)``.

    Results come batch by batch (longest batch first), not in input order.
    Inputs that ``chunking`` says to chunk run alone, window by window, with a
    ``notice`` saying so; with ``head`` (each result then carries the head's outputs)
    they are errors instead. ``batch_seconds`` None: the device's default.
    ``clock`` (optional) accumulates the model's time and the time spent waiting
    for decoded audio. ``plan``: the batches to run (lists of source indices, see
    :func:`~w2v.pipeline.batching.plan_batches`), when the caller made the plan itself (a
    shard runs some batches of the whole run's plan); default: a plan of every source.
    """
    clock = clock or Clock()
    normalize_input = bool(getattr(model, "normalize", False))
    min_samples = int(model.config.receptive_field)
    max_whole = chunking.whole_limit()

    def load(i: int) -> tuple[np.ndarray | long_audio.LongAudio, AudioInfo]:
        s = sources[i]
        if s.path is not None:
            return long_audio.load(
                s.path,
                channel=channel,
                normalize_input=normalize_input,
                min_samples=min_samples,
                max_whole=max_whole,
            )
        wave = audio.prepare(
            s.wave, s.rate, normalize_input=normalize_input, min_samples=min_samples
        )
        return wave, AudioInfo(sample_rate=int(s.rate), channels=1, frames=int(s.wave.shape[0]))

    if batch_seconds is None:
        batch_seconds = default_batch_seconds(placement(model)[0])
    if plan is None:
        plan = plan_batches([s.samples_16k for s in sources], batch_seconds)
    decoded = prefetch(plan, load, workers=workers)
    try:
        for batch in plan:
            start = time.perf_counter()
            loaded = next(decoded)
            clock.waiting += time.perf_counter() - start
            good = []
            for i, r in zip(batch, loaded, strict=True):
                if isinstance(r, Exception):
                    yield i, r, None
                    continue
                wave, info = r
                long = isinstance(wave, long_audio.LongAudio)
                samples = wave.samples if long else wave.shape[0]
                chunk = chunking.chunk_for(samples)
                if chunk is None:  # never for a LongAudio: it is longer than chunking allows
                    good.append((i, r))
                    continue
                if head is not None:
                    yield i, too_long(max_whole), info
                    continue
                what = sources[i].path if sources[i].path is not None else f"input {i}"
                notice(
                    f"{what}: {samples / SAMPLE_RATE:.1f} s long; extracting in {chunk:g} s "
                    f"windows with {chunking.context_seconds:g} s context each side"
                )
                start, waited = time.perf_counter(), clock.waiting
                try:
                    res = run_long(
                        model, wave, layers, pool, chunk, chunking.context_seconds, clock
                    )
                except AudioError as e:  # the file changed or went bad since it was measured
                    res = e
                except Exception as e:  # noqa: BLE001 - reported per item
                    _free_memory()
                    res = _model_error(e)
                clock.model += time.perf_counter() - start - (clock.waiting - waited)
                yield i, res, info
            start = time.perf_counter()
            results = run_items(model, [wave for _, (wave, _) in good], layers, pool, head)
            clock.model += time.perf_counter() - start
            allocator.after_batch()  # bounded mode: give the batch's freed memory back
            for (i, (_, info)), res in zip(good, results, strict=True):
                yield i, res, info
    finally:
        decoded.close()  # cancels read-ahead not yet started when the caller stops early
