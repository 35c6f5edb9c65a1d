"""Batches: group items of similar duration, pad with lengths, and decode ahead of the model.

Planning (:func:`plan_batches`): items are sorted by length, longest first (so
an out-of-memory batch shows up at the start, not after an hour), and cut into
consecutive runs whose *padded* size, ``longest item × batch size``, stays
within ``batch_seconds`` of 16 kHz audio. Neighbours in that order have similar
lengths, so padding stays small. An item longer than the budget on its own
forms a batch of one. Lengths for planning come from file headers
(:func:`w2v.pipeline.audio.probe`), so nothing is decoded twice.

Read-ahead (:func:`prefetch`): a thread pool decodes the items of the next
``ahead`` batches while the model works on the current one (soundfile and soxr
release the GIL), so the model does not wait on I/O.

Defaults: the batch budget per device (:func:`default_batch_seconds`) and the
thread counts (:func:`default_workers`, :data:`PROBE_WORKERS`) are defined here
and nowhere else.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

from w2v.config import SAMPLE_RATE

T = TypeVar("T")
R = TypeVar("R")


CPU_BATCH_SECONDS = 30.0
"""Default padded audio seconds per batch (longest item × batch size) with the model on a
CPU. One 10 s clip already keeps the CPU's matrix products busy, so bigger batches only
add padding and cache pressure (measured with ``bench/bench_embed.py``)."""

GPU_BATCH_SECONDS = 160.0
"""Default padded audio seconds per batch on a GPU, which needs wide batches to be busy."""

CPU_CORES_PER_WORKER = 8
"""With the model on the CPU, one decoding thread per this many cores (at least one)."""

GPU_MAX_WORKERS = 4
"""With the model on a GPU, decoding threads up to this many (one per core)."""

PROBE_WORKERS = 8
"""Threads reading headers before a run (I/O bound, and the model is idle then)."""


def default_batch_seconds(device: str | torch.device) -> float:
    """:data:`CPU_BATCH_SECONDS` for a CPU device, else :data:`GPU_BATCH_SECONDS`."""
    return CPU_BATCH_SECONDS if torch.device(device).type == "cpu" else GPU_BATCH_SECONDS


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device: str | None = None) -> int:
    """Decoding threads for a model on ``device`` (a device type such as ``"cuda"``;
    None: the CPU). On the CPU the model needs the cores far more than decoding does
    (wav2vec2-base: ~15 GFLOP per second of audio, decoding a few hundred times less),
    and torch's own thread count is left as it is, so decoding gets
    :data:`CPU_CORES_PER_WORKER` cores per thread; on a GPU it gets up to
    :data:`GPU_MAX_WORKERS`.
    """
    cpus = available_cpus()
    if device is not None and not str(device).startswith("cpu"):
        return max(1, min(GPU_MAX_WORKERS, cpus))
    return max(1, cpus // CPU_CORES_PER_WORKER)


def plan_batches(
    lengths: Sequence[int], batch_seconds: float, sample_rate: int = SAMPLE_RATE
) -> list[list[int]]:
    """Group item indices into batches of similar length.

    ``lengths``: samples per item (at ``sample_rate``). Returns lists of indices
    into ``lengths``; every index appears exactly once. Within a batch indices
    are in descending length order; batches come longest first. Each batch
    satisfies ``max(length) * len(batch) <= batch_seconds * sample_rate``
    unless it holds a single item.
    """
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
    budget = batch_seconds * sample_rate
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = int(lengths[current[0]]) if current else int(lengths[i])
        if current and (len(current) + 1) * max(longest, 1) > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad(waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad mono waveforms with zeros.

    Returns ``waveforms (batch, samples)`` float32 and ``lengths (batch,)`` int64.
    """
    lengths = torch.tensor([int(w.shape[0]) for w in waves], dtype=torch.int64)
    out = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0, dtype=torch.float32)
    for row, w in zip(out, waves, strict=True):
        row[: w.shape[0]] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return out, lengths


def _capture(fn: Callable[[T], R], arg: T) -> R | Exception:
    try:
        return fn(arg)
    except Exception as e:  # noqa: BLE001 - one item's failure is that item's result
        return e


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int | None = None
) -> list[R | Exception]:
    """``[fn(x) for x in items]`` on a thread pool; an item whose call raised yields the exception."""
    workers = workers or default_workers()
    if workers <= 1 or len(items) <= 1:
        return [_capture(fn, x) for x in items]
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="w2v-probe") as pool:
        return list(pool.map(lambda x: _capture(fn, x), items))


def prefetch(
    batches: Sequence[Sequence[T]],
    load: Callable[[T], R],
    *,
    workers: int | None = None,
    ahead: int = 2,
) -> Iterator[list[R | Exception]]:
    """Yield ``[load(x) for x in batch]`` for each batch, in order, decoding ``ahead`` batches early.

    A ``load`` that raises yields its exception in that item's place, so one
    bad item never costs the rest of its batch. Closing the generator early
    cancels the work not yet started.
    """
    workers = workers or default_workers()
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="w2v-decode")
    pending: deque[list[cf.Future]] = deque()
    it = iter(batches)

    def submit_next() -> bool:
        batch = next(it, None)
        if batch is None:
            return False
        pending.append([pool.submit(_capture, load, x) for x in batch])
        return True

    try:
        for _ in range(max(0, ahead) + 1):
            if not submit_next():
                break
        while pending:
            futures = pending.popleft()
            submit_next()
            yield [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
