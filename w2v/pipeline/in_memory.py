"""``w2v.embed``: audio files or in-memory waveforms in, a list of arrays out, no files written."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from w2v.config import SAMPLE_RATE
from w2v.errors import AudioError, one_line
from w2v.loading import load_model
from w2v.longform import DEFAULT_CONTEXT_SECONDS, ChunkPolicy
from w2v.pipeline import audio
from w2v.pipeline.batching import PROBE_WORKERS, parallel_map
from w2v.pipeline.inputs import abspath
from w2v.pipeline.layers import LayerSpec, resolve_layers
from w2v.pipeline.pooling import check_pool
from w2v.pipeline.stream import Source, decode_workers, stream


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
) -> list[np.ndarray]:
    """Embed audio files or in-memory waveforms; no files written.

    inputs: a path, a waveform (numpy array or torch tensor) with
    ``sample_rate=``, an ``(array, rate)`` tuple, or a list of any of these. A
    1-D array is one mono waveform; a 2-D array is a batch of waveforms
    ``(batch, samples)``, one item per row. Files go through
    :func:`w2v.pipeline.audio.load` (mono mix-down, or ``channel``; soxr to 16 kHz).
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

    Returns one float32 array per item, in input order: ``(layers, dim)``
    pooled, ``(layers, 2 * dim)`` for ``stats``, ``(layers, frames, dim)`` for
    ``"none"``. Raises :class:`w2v.errors.AudioError` naming the first bad item.
    """
    check_pool(pool)
    chunking = ChunkPolicy(chunk_seconds, context_seconds)
    sources = _sources(inputs, sample_rate)
    if not sources:
        return []
    model = load_model(model, device=device, dtype=dtype, compile=compile)
    layer_idx = resolve_layers(layers, model.config.num_layers)
    files = [s for s in sources if s.path is not None]
    headers = parallel_map(audio.probe, [s.path for s in files], PROBE_WORKERS)
    for s, info in zip(files, headers, strict=True):
        # a header that cannot be read plans as length 0; decoding then reports the problem
        s.samples_16k = 0 if isinstance(info, Exception) else info.samples_16k
    results: list[np.ndarray | None] = [None] * len(sources)
    items = stream(
        model,
        sources,
        layer_idx,
        pool,
        batch_seconds=batch_seconds,
        channel=channel,
        workers=decode_workers(model, workers),
        chunking=chunking,
        notice=lambda text: warnings.warn(text, stacklevel=3),
    )
    try:
        for i, res, _ in items:
            if isinstance(res, Exception):
                what = str(sources[i].path) if sources[i].path is not None else f"input {i}"
                raise AudioError(f"{what}: {one_line(res)}") from None
            results[i] = res[0]
    finally:
        items.close()
    return results  # type: ignore[return-value]


def _sources(inputs: Any, sample_rate: int | None) -> list[Source]:
    """``embed``'s ``inputs`` as a flat list of sources, one per file or waveform row."""
    if isinstance(inputs, (list, tuple)) and not _is_pair(inputs):
        out = []
        for k, x in enumerate(inputs):
            out.extend(_one(x, sample_rate, f"input {k}"))
        return out
    return _one(inputs, sample_rate, "input")


def _is_pair(x: Any) -> bool:
    """An ``(array, rate)`` tuple rather than a tuple of inputs."""
    return isinstance(x, tuple) and len(x) == 2 and np.isscalar(x[1])


def _one(x: Any, sample_rate: int | None, where: str) -> list[Source]:
    if isinstance(x, (str, os.PathLike)):
        return [Source(path=abspath(x))]
    if _is_pair(x):
        return _waveforms(x[0], int(x[1]), where)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return _waveforms(x, sample_rate, where)
    raise TypeError(
        f"{where}: expected a path, an array with sample_rate=, or an (array, rate) tuple; "
        f"got {type(x).__name__}"
    )


def _waveforms(x: Any, rate: int | None, where: str) -> list[Source]:
    """``(samples,)`` or ``(batch, samples)`` at ``rate`` → one source per waveform."""
    if rate is None:
        raise ValueError(f"{where}: an in-memory waveform needs its rate: pass sample_rate=")
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        rows = [a]
    elif a.ndim == 2:
        rows = list(a)  # (batch, samples): one waveform per row
    else:
        raise ValueError(f"{where}: expected (samples,) or (batch, samples), got shape {a.shape}")
    return [
        Source(wave=r, rate=int(rate), samples_16k=round(r.shape[0] * SAMPLE_RATE / int(rate)))
        for r in rows
    ]
