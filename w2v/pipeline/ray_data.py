"""Ray: embeddings as a Ray Data stage, and ``w2v embed --engine ray``.

Two uses (``pip install 'w2v[ray]'``; Ray is imported only when one is used):

* :class:`EmbedBatch`, a callable class for ``ray.data.Dataset.map_batches``: each actor
  loads the model once, and each batch of rows (a ``path`` column, or ``array`` and
  ``sample_rate`` columns) comes back with a ``layer_K`` column per layer and an ``error``
  column, beside the row's own columns::

      ds = ray.data.from_items([{"path": p} for p in paths])
      ds = ds.map_batches(EmbedBatch, fn_constructor_kwargs=dict(model="ckpt/", layers=[6]),
                          concurrency=4, batch_size=16, batch_format="numpy")

* :func:`ray_stream`, the engine behind ``w2v embed --engine ray --actors K``: the run's
  batch plan becomes a Ray dataset, one row per batch (its files' paths), mapped by an
  actor pool of K (``num_gpus`` per actor from ``--gpus-per-actor``). Each actor decodes and
  runs its batches exactly as a local run would (:func:`w2v.pipeline.stream.stream` on that
  batch), so the outputs are the same bytes at the same torch thread count (an actor's:
  Ray sets ``OMP_NUM_THREADS`` to its CPUs, one by default); the driver writes the outputs
  and the manifest as a local run does.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from w2v.errors import UsageError
from w2v.loading import load_model
from w2v.longform import ChunkPolicy
from w2v.pipeline.audio import AudioInfo
from w2v.pipeline.head import HeadSpec
from w2v.pipeline.in_memory import embed
from w2v.pipeline.layers import LayerSpec, resolve_layers
from w2v.pipeline.parquet import layer_column
from w2v.pipeline.shards import Shard
from w2v.pipeline.stream import Clock, Result, Source, decode_workers, stream

ENGINES = ("local", "ray")
"""Where ``w2v embed`` runs the model: in this process, or on a Ray cluster's actors."""


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'w2v[ray]'") from None
    return ray


def check_engine(
    engine: str, actors: Any, gpus_per_actor: Any, shard: Shard, head: bool = False
) -> None:
    """:class:`UsageError` unless the engine options go together: ``actors`` (1 or more)
    and ``gpus_per_actor`` (0 or more) only with ``engine="ray"``, which needs Ray and does
    not split into shards (it spreads one run over the cluster itself) nor run heads."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r:.40}; valid: {', '.join(ENGINES)}")
    if engine == "local":
        if actors is not None or gpus_per_actor is not None:
            raise UsageError("--actors and --gpus-per-actor go with --engine ray")
        return
    if actors is not None and (
        isinstance(actors, bool) or not isinstance(actors, numbers.Integral) or actors < 1
    ):
        raise UsageError(
            f"--actors must be a whole number of actors, 1 or more; got {actors!r:.40}"
        )
    if gpus_per_actor is not None and (
        isinstance(gpus_per_actor, bool)
        or not isinstance(gpus_per_actor, numbers.Real)
        or not (math.isfinite(gpus_per_actor) and gpus_per_actor >= 0)
    ):
        raise UsageError(f"--gpus-per-actor must be 0 or more, got {gpus_per_actor!r:.40}")
    if shard.sharded:
        raise UsageError(
            f"--engine ray runs the whole input list on the Ray cluster, but this process is "
            f"{shard.describe()}; run one driver without sharding"
        )
    if head:
        raise UsageError("--head runs with --engine local only")
    _ray()


class _PlanRunner:
    """An actor of ``--engine ray``: loads the model once, then runs whole batches of the
    run's plan, one dataset row per batch."""

    def __init__(
        self,
        load: dict[str, Any],
        layers: list[int],
        pool: str,
        batch_seconds: float,
        channel: int | None,
        workers: int | None,
        chunking: ChunkPolicy,
    ) -> None:
        self.model = load_model(**load)
        self.layers, self.pool = layers, pool
        self.batch_seconds, self.channel = batch_seconds, channel
        self.workers = decode_workers(self.model, workers)
        self.chunking = chunking

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        cols: dict[str, list[Any]] = {name: [] for name in _RESULT_COLUMNS}
        for indices, paths, lengths in zip(
            batch["indices"], batch["paths"], batch["samples"], strict=True
        ):
            sources = [
                Source(path=Path(os.fsdecode(bytes(p))), samples_16k=int(n))
                for p, n in zip(paths, lengths, strict=True)
            ]
            notices: list[str] = []
            clock = Clock()
            results = stream(
                self.model,
                sources,
                self.layers,
                self.pool,
                batch_seconds=self.batch_seconds,
                channel=self.channel,
                workers=self.workers,
                chunking=self.chunking,
                notice=notices.append,
                clock=clock,
                plan=[list(range(len(sources)))],  # the batch as planned, in its order
            )
            first = True
            for i, res, info in results:
                ok = not isinstance(res, Exception)
                window = res.window if ok and res.window else (math.nan, math.nan)
                cols["index"].append(int(indices[i]))
                cols["array"].append(res.array if ok else np.zeros(0, np.float32))
                cols["frames"].append(int(res.frames) if ok else -1)
                cols["chunk"].append(window[0])
                cols["context"].append(window[1])
                cols["error"].append(b"" if ok else _text_bytes(str(res) or type(res).__name__))
                cols["info"].append(
                    [-1, -1, -1] if info is None else [info.sample_rate, info.channels, info.frames]
                )
                cols["notice"].append(_text_bytes("\n".join(notices)) if first else b"")
                cols["model_seconds"].append(clock.model if first else 0.0)
                cols["waiting_seconds"].append(clock.waiting if first else 0.0)
                first = False
        return {name: _column(values) for name, values in cols.items()}


_RESULT_COLUMNS = (
    "index",
    "array",
    "frames",
    "chunk",
    "context",
    "error",
    "info",
    "notice",
    "model_seconds",
    "waiting_seconds",
)


def _text_bytes(text: str) -> bytes:
    # text may hold a file name's undecodable bytes (lone surrogates), which Arrow strings
    # cannot: it travels as bytes and is decoded back the same way
    return text.encode("utf-8", "surrogateescape")


def _text(data: Any) -> str:
    return bytes(data).decode("utf-8", "surrogateescape")


def _column(values: list[Any]) -> np.ndarray:
    if values and isinstance(values[0], np.ndarray):
        shapes = {v.shape for v in values}
        if len(shapes) == 1:
            return np.stack(values)
        column = np.empty(len(values), dtype=object)  # ragged: one array per row
        column[:] = values
        return column
    if values and isinstance(values[0], bytes):
        return np.array(values, dtype=object)
    return np.asarray(values)


def ray_stream(
    load: dict[str, Any],
    sources: Sequence[Source],
    layers: list[int],
    pool: str,
    actors: int | None,
    gpus_per_actor: float | None,
    *,
    batch_seconds: float,
    channel: int | None,
    workers: int | None,
    chunking: ChunkPolicy,
    notice: Callable[[str], None],
    clock: Clock | None = None,
    head: HeadSpec | None = None,
    plan: Sequence[Sequence[int]],
) -> Iterator[tuple[int, Result | Exception, AudioInfo | None]]:
    """:func:`w2v.pipeline.stream.stream` on a Ray actor pool: yields ``(source index,
    result or exception, decoded AudioInfo or None)`` for every item of ``plan``'s batches.
    ``load``: :func:`w2v.loading.load_model`'s arguments, for each actor to load the model
    (on the GPU Ray gives it, if any). Connects to the running Ray (``ray.init()`` when
    none: ``RAY_ADDRESS``, else a local one)."""
    if head is not None:
        raise UsageError("--head runs with --engine local only")
    ray = _ray()
    clock = clock or Clock()
    if not ray.is_initialized():
        ray.init()
    ray.data.DataContext.get_current().enable_progress_bars = False  # the CLI shows its own
    rows = [
        {
            "indices": list(batch),
            "paths": [os.fsencode(sources[i].path) for i in batch],
            "samples": [int(sources[i].samples_16k) for i in batch],
        }
        for batch in plan
    ]
    if not rows:
        return
    gpus = float(gpus_per_actor or 0)
    done = ray.data.from_items(rows).map_batches(
        _PlanRunner,
        fn_constructor_kwargs=dict(
            load=load,
            layers=layers,
            pool=pool,
            batch_seconds=batch_seconds,
            channel=channel,
            workers=workers,
            chunking=chunking,
        ),
        batch_size=1,
        concurrency=actors or 1,
        num_cpus=1,
        num_gpus=gpus or None,
        batch_format="numpy",
    )
    for row in done.iter_rows():
        clock.model += float(row["model_seconds"])
        clock.waiting += float(row["waiting_seconds"])
        for line in filter(None, _text(row["notice"]).split("\n")):
            notice(line)
        rate, channels, frames = (int(x) for x in row["info"])
        info = None if rate < 0 else AudioInfo(rate, channels, frames)
        if len(row["error"]):
            result: Result | Exception = RuntimeError(_text(row["error"]))
        else:
            chunk, context = float(row["chunk"]), float(row["context"])
            window = None if math.isnan(chunk) else (chunk, context)
            result = Result(np.asarray(row["array"]), int(row["frames"]), window)
        yield int(row["index"]), result, info


class EmbedBatch:
    """A callable class for ``ray.data.Dataset.map_batches`` (``batch_format="numpy"``).

    Each actor loads ``model`` (anything :func:`w2v.load` accepts, on ``device`` in
    ``dtype``) once. A batch's rows name a file in ``path`` (a string), or hold a waveform
    in ``array`` with its rate in ``sample_rate``. Returned: the batch's columns and, per
    layer K asked for, ``layer_K`` ``(rows, dim)`` pooled (NaN for a row that failed) or,
    with ``pool="none"``, one ``(frames, dim)`` array per row (``(0, dim)`` when it
    failed), and ``error``: "" or the reason the row failed. Options as :func:`w2v.embed`.
    """

    def __init__(
        self,
        model: Any,
        *,
        layers: LayerSpec = "all",
        pool: str = "mean",
        device: str | None = None,
        dtype: str | None = None,
        channel: int | None = None,
        batch_seconds: float | None = None,
    ) -> None:
        self.model = load_model(model, device=device, dtype=dtype)
        self.layers = resolve_layers(layers, self.model.config.num_layers)
        self.options = dict(pool=pool, channel=channel, batch_seconds=batch_seconds)
        self.pool = pool

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values()))) if batch else 0
        inputs: list[Any] = []
        for r in range(n):
            path = batch["path"][r] if "path" in batch else None
            if path is not None and str(path) != "":
                inputs.append(str(path))
            else:
                inputs.append((np.asarray(batch["array"][r]), int(batch["sample_rate"][r])))
        rows: list[np.ndarray | None] = [None] * n
        errors = [""] * n
        for r, x in enumerate(inputs):  # one row a time only to name its error; batched below
            if isinstance(x, str) and not os.path.isfile(x):
                errors[r] = f"{x}: not a file"
        good = [r for r in range(n) if not errors[r]]
        if good:
            embs = embed(
                [inputs[r] for r in good],
                self.model,
                layers=self.layers,
                errors="skip",
                **self.options,
            )
            reasons = iter(reason for _, reason in embs.errors)  # the failed ones, in order
            for k, r in enumerate(good):
                rows[r] = embs[k]
                if embs[k] is None:
                    errors[r] = next(reasons, "failed")
        out = dict(batch)
        out["error"] = np.array(errors, dtype=object)
        dim = next((a.shape[-1] for a in rows if a is not None), 0)
        for j, layer in enumerate(self.layers):
            if self.pool == "none":
                column = np.empty(n, dtype=object)
                column[:] = [
                    a[j] if a is not None else np.zeros((0, dim), np.float32) for a in rows
                ]
            else:
                column = np.full((n, dim), np.nan, np.float32)
                for r, a in enumerate(rows):
                    if a is not None:
                        column[r] = a[j]
            out[layer_column(layer)] = column
        return out
