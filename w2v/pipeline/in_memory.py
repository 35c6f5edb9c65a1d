"""``w2v.embed``: audio files, directories, list files or in-memory waveforms in, a list of
arrays out, no files written."""

from __future__ import annotations

import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from w2v.config import SAMPLE_RATE
from w2v.errors import AudioError, escaped, one_line
from w2v.loading import load_model
from w2v.longform import DEFAULT_CONTEXT_SECONDS
from w2v.pipeline import audio
from w2v.pipeline.batching import PROBE_WORKERS, parallel_map
from w2v.pipeline.inputs import expand, no_inputs
from w2v.pipeline.layers import LayerSpec, resolve_layers
from w2v.pipeline.options import check_batch_seconds, check_channel, check_workers, chunk_policy
from w2v.pipeline.pooling import check_pool
from w2v.pipeline.stream import Source, decode_workers, stream

ERRORS = ("raise", "skip")
"""What :func:`embed` does with an input that fails: raise at once, or skip it and go on."""


class Embeddings(list):
    """What :func:`embed` returns: a list holding one float32 array per item, in input order
    (None in place of an item that failed under ``errors="skip"``), with

    * ``paths``: the audio file each item came from (its absolute path), or None for an
      in-memory waveform; a directory or list file given stands for the files it holds;
    * ``errors``: ``(item, reason)`` for every item that failed, in input order, where
      ``item`` is the file's path or ``"input i"`` (position i in the list) for a waveform.
    """

    def __init__(self, items=(), paths=(), errors=()):
        super().__init__(items)
        self.paths: list[Path | None] = list(paths)
        self.errors: list[tuple[str, str]] = list(errors)


def embed(
    inputs: Any,
    model: Any,
    *,
    layers: LayerSpec = "all",
    pool: str = "mean",
    sample_rate: int | None = None,
    channel: int | None = None,
    batch_seconds: float | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    workers: int | None = None,
    chunk_seconds: float | None = None,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    compile: bool = False,
    errors: str = "raise",
    backend: str = "torch",
) -> Embeddings:
    """Embed audio files or in-memory waveforms; no files written.

    inputs: a path, a waveform (numpy array or torch tensor, real float or integer
    samples) with ``sample_rate=``, an ``(array, rate)`` tuple, or a list of any of
    these. A path is what ``w2v embed`` accepts: an audio file, a directory
    (searched recursively, see :func:`w2v.pipeline.inputs.expand`) or a
    ``.txt``/``.lst`` list of paths; each file it holds is one item. A 1-D array is
    one mono waveform; a 2-D array is a batch of waveforms ``(batch, samples)``,
    one item per row. Files go through :func:`w2v.pipeline.audio.load` (mono
    mix-down, or ``channel``; soxr to 16 kHz).
    model: a loaded model, or anything :func:`w2v.load` accepts (moved to
    ``device`` / cast to ``dtype`` when given).
    layers: ``"all"``, an index, a list of indices, or a spec string
    (``"0,6,12"``, ``"4-8"``, ``"-1"``).
    pool: ``"mean"``, ``"stats"`` (mean and population std concatenated) or
    ``"none"`` (frames).
    batch_seconds: padded audio seconds per batch (longest item × items);
    default :data:`~w2v.pipeline.batching.CPU_BATCH_SECONDS` on a CPU,
    :data:`~w2v.pipeline.batching.GPU_BATCH_SECONDS` on a GPU.
    chunk_seconds, context_seconds: long inputs are computed in windows of
    ``chunk_seconds`` with ``context_seconds`` of context on each side (see
    :mod:`w2v.longform`); None (default) does so only for inputs over
    :data:`~w2v.longform.AUTO_CHUNK_SECONDS`, with a warning; 0 never chunks.
    compile: run the model through :func:`torch.compile` (faster after a slow
    first call; worth it for many inputs).
    backend: ``"torch"`` or ``"onnxruntime"`` (see :func:`w2v.load`).
    errors: ``"raise"`` (default) raises :class:`w2v.errors.AudioError` naming the
    first bad item met (a missing or unreadable file, audio too short, a rate
    out of bounds, a model failure on that item) and returns nothing;
    ``"skip"`` goes on, leaves None in that item's place and lists it in the
    result's ``errors``.

    Returns an :class:`Embeddings` list, one float32 array per item in input
    order: ``(layers, dim)`` pooled, ``(layers, 2 * dim)`` for ``stats``,
    ``(layers, frames, dim)`` for ``"none"``. Misuse raises whatever ``errors``
    says: TypeError for a complex array, a sparse or meta tensor, a non-numeric rate,
    option or model, or a non-integer layer, channel or worker count; ValueError for a
    rate that is not a positive whole number of Hz or an unknown ``errors``;
    :class:`w2v.errors.UsageError` (a ValueError) for an option out of range (see
    :mod:`w2v.pipeline.options`); :class:`w2v.errors.UsageError` for a directory or list
    holding no audio, a list file that cannot be read, a layer out of range or a
    model that cannot be loaded.
    """
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {', '.join(map(repr, ERRORS))}, got {errors!r}")
    check_pool(pool)
    chunking = chunk_policy(chunk_seconds, context_seconds)
    batch_seconds = check_batch_seconds(batch_seconds)
    workers, channel = check_workers(workers), check_channel(channel)
    if sample_rate is not None:
        sample_rate = _rate(sample_rate, "sample_rate")
    items = _items(inputs, sample_rate)
    failed: list[tuple[int, str]] = []

    def fail(i: int, e: Exception) -> None:
        if errors == "raise":
            raise AudioError(f"{items[i].label}: {one_line(e)}") from None
        failed.append((i, one_line(e)))

    for i, it in enumerate(items):
        if isinstance(it.source, Exception):
            fail(i, it.source)
    runnable = [i for i, it in enumerate(items) if isinstance(it.source, Source)]
    results: list[np.ndarray | None] = [None] * len(items)
    if runnable:
        model = load_model(model, device=device, dtype=dtype, compile=compile, backend=backend)
        layer_idx = resolve_layers(layers, model.config.num_layers)
        sources = [items[i].source for i in runnable]
        files = [s for s in sources if s.path is not None]
        headers = parallel_map(audio.probe, [s.path for s in files], PROBE_WORKERS)
        for s, info in zip(files, headers, strict=True):
            # a header that cannot be read plans as length 0; decoding then reports the problem
            s.samples_16k = 0 if isinstance(info, Exception) else info.samples_16k
        stream_items = stream(
            model,
            sources,
            layer_idx,
            pool,
            batch_seconds=batch_seconds,
            channel=channel,
            workers=decode_workers(model, workers),
            chunking=chunking,
            notice=lambda text: warnings.warn(escaped(text), stacklevel=3),
        )
        try:
            for k, res, _ in stream_items:
                if isinstance(res, Exception):
                    fail(runnable[k], res)
                else:
                    results[runnable[k]] = res[0]
        finally:
            stream_items.close()
    reasons = [(items[i].label, reason) for i, reason in sorted(failed)]
    return Embeddings(results, [it.path for it in items], reasons)


class _Item(NamedTuple):
    """One item of ``embed``: how messages name it (the file's path, or ``"input i"`` with
    i its place in the result), its file, and what to run (or why it cannot be run)."""

    label: str
    path: Path | None
    source: Source | Exception


def _items(inputs: Any, sample_rate: int | None) -> list[_Item]:
    """``embed``'s ``inputs`` as a flat list of items, one per file or waveform row; the
    source is the exception for a file known to be bad before reading (a missing path)."""
    many = isinstance(inputs, list | tuple) and not _is_pair(inputs)
    out: list[_Item] = []
    paths_given = False
    for k, x in enumerate(inputs if many else [inputs]):
        if isinstance(x, str | os.PathLike):
            paths_given = True
            for it in expand(x):
                source = AudioError(it.error) if it.error else Source(path=it.path)
                out.append(_Item(escaped(str(it.path)), it.path, source))
            continue
        for wave in _one(x, sample_rate, f"input {k}" if many else "input"):
            out.append(_Item(f"input {len(out)}", None, wave))
    if paths_given and not out:
        raise no_inputs()
    return out


def _is_pair(x: Any) -> bool:
    """An ``(array, rate)`` tuple rather than a tuple of inputs (such as two paths)."""
    return (
        isinstance(x, tuple)
        and len(x) == 2
        and isinstance(x[0], np.ndarray | torch.Tensor)
        and (np.isscalar(x[1]) or x[1] is None)
    )


def _one(x: Any, sample_rate: int | None, where: str) -> list[Source]:
    if _is_pair(x):
        return _waveforms(x[0], _rate(x[1], f"{where}: rate"), where)
    if isinstance(x, np.ndarray | torch.Tensor):
        return _waveforms(x, sample_rate, where)
    raise TypeError(
        f"{where}: expected a path, an array with sample_rate=, an (array, rate) tuple, or a "
        f"list of these; got {type(x).__name__}"
    )


def _rate(rate: Any, what: str) -> int:
    """A sample rate given by the caller as an int; TypeError or ValueError when it is not a
    positive whole number of Hz (bounds are checked per item, as for files)."""
    if isinstance(rate, bool | np.bool_) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{what} must be a number of Hz, got {type(rate).__name__} {rate!r:.40}")
    if not (math.isfinite(rate) and rate > 0 and rate == int(rate)):
        raise ValueError(f"{what} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _waveforms(x: Any, rate: int | None, where: str) -> list[Source]:
    """``(samples,)`` or ``(batch, samples)`` at ``rate`` → one source per waveform."""
    if rate is None:
        raise ValueError(f"{where}: an in-memory waveform needs its rate: pass sample_rate=")
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{where}: expected real audio samples, got {x.dtype}")
        if x.layout != torch.strided or x.is_meta:
            kind = "a meta tensor (no data)" if x.is_meta else f"a {x.layout} tensor"
            raise TypeError(f"{where}: expected a dense tensor of audio samples, got {kind}")
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":  # complex would silently lose its imaginary part
        raise TypeError(f"{where}: expected real audio samples (float or integer), got {a.dtype}")
    with np.errstate(over="ignore"):  # beyond float32's range: reported as Inf per item
        a = a.astype(np.float32, copy=False)
    if a.ndim == 1:
        rows = [a]
    elif a.ndim == 2:
        rows = list(a)  # (batch, samples): one waveform per row
    else:
        raise ValueError(f"{where}: expected (samples,) or (batch, samples), got shape {a.shape}")
    return [
        Source(wave=r, rate=rate, samples_16k=round(r.shape[0] * SAMPLE_RATE / rate)) for r in rows
    ]
