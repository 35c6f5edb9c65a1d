"""Shards: which part of a run this process does, and which batches make up each part.

Exactness: the model gives the same item different last bits in batches of different
shapes, so a shard is made of whole batches of the *single run's* batch plan. Every
process computes that plan the same way (:func:`canonical_order`, then
:func:`w2v.pipeline.batching.plan_batches` on header lengths) and keeps the batches
:func:`assign_batches` gives its index; each output then equals the single run's byte
for byte (at the same thread count). Nothing here depends on set or dict order or on
``hash()``, so every Python version and hash seed gives the same shards.

Where a shard comes from (:func:`resolve_shard`, first match wins):

1. ``--num-shards N --shard-index I`` (``num_shards`` / ``shard_index``);
2. torchrun: ``RANK`` / ``WORLD_SIZE`` (``LOCAL_RANK`` picks the GPU, :func:`pick_device`);
3. a SLURM job array: ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of
   ``SLURM_ARRAY_TASK_COUNT``, times ``SLURM_NTASKS`` tasks each (``SLURM_PROCID``);
4. SLURM tasks: ``SLURM_PROCID`` / ``SLURM_NTASKS`` (``SLURM_LOCALID`` picks the GPU);
5. otherwise the whole run (shard 0 of 1).
"""

from __future__ import annotations

import bisect
import heapq
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch

from w2v.errors import UsageError, quoted

T = TypeVar("T")

MAX_SHARDS = 100_000
"""The most shards a run may be split into (names hold five digits)."""


@dataclass(frozen=True)
class Shard:
    """This process's part of a run: ``index`` of ``count`` (0-based), ``origin`` saying
    where that came from (for the line the run prints), ``launcher`` ``"torchrun"``,
    ``"slurm"``, ``"flags"`` or None (no sharding), and ``local_rank`` (the process's
    place on its node, which picks its GPU) when the launcher gives one."""

    index: int = 0
    count: int = 1
    origin: str = "a single process"
    launcher: str | None = None
    local_rank: int | None = None

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def name(self) -> str:
        """``shard-00003-of-00016``: the part of the file names this shard writes."""
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    def describe(self) -> str:
        """``shard 3 of 16 (0-based), from torchrun RANK/WORLD_SIZE``."""
        if not self.sharded:
            return f"one shard (the whole run), {self.origin}"
        return f"shard {self.index} of {self.count} (0-based), from {self.origin}"


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(
            f"environment variable {name}={quoted(text, 40)} is not an integer"
        ) from None


def _checked(index: int, count: int, origin: str) -> tuple[int, int]:
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"the number of shards ({origin}) must be 1 to {MAX_SHARDS}, got {count}")
    if not 0 <= index < count:
        raise UsageError(f"the shard index ({origin}) must be 0 to {count - 1}, got {index}")
    return index, count


def resolve_shard(
    num_shards: int | None = None,
    shard_index: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Shard:
    """This process's :class:`Shard`: the explicit ``num_shards`` / ``shard_index`` when
    given (both, or neither), else what torchrun or SLURM set in ``env`` (default
    ``os.environ``), else the whole run. :class:`UsageError` for a value out of range, one
    of the two options without the other, or an environment variable that is no integer."""
    env = os.environ if env is None else env
    if (num_shards is None) != (shard_index is None):
        raise UsageError("--num-shards and --shard-index go together: give both, or neither")
    local = _env_int(env, "LOCAL_RANK")
    if num_shards is not None:
        index, count = _checked(shard_index, num_shards, "--num-shards/--shard-index")
        return Shard(index, count, "--num-shards/--shard-index", "flags", local)
    rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    if rank is not None and world is not None:
        index, count = _checked(rank, world, "torchrun RANK/WORLD_SIZE")
        return Shard(index, count, "torchrun RANK/WORLD_SIZE", "torchrun", local)
    tasks, proc = _env_int(env, "SLURM_NTASKS"), _env_int(env, "SLURM_PROCID")
    tasks, proc = (1, 0) if tasks is None or proc is None else (tasks, proc)
    local = _env_int(env, "SLURM_LOCALID")
    task_id, task_count = (
        _env_int(env, "SLURM_ARRAY_TASK_ID"),
        _env_int(env, "SLURM_ARRAY_TASK_COUNT"),
    )
    if task_id is not None and task_count is not None:
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
        if step != 1:
            raise UsageError(
                f"a SLURM job array with step {step} cannot number its shards; use a "
                "contiguous array (--array=0-N) or give --num-shards and --shard-index"
            )
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
        origin = "SLURM job array SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
        if tasks > 1:
            origin += " and SLURM_PROCID/SLURM_NTASKS"
        index, count = _checked(
            (task_id - first) * tasks + proc, task_count * tasks, origin.replace(" and ", ", ")
        )
        return Shard(index, count, origin, "slurm", local)
    if tasks > 1:
        index, count = _checked(proc, tasks, "SLURM_PROCID/SLURM_NTASKS")
        return Shard(index, count, "SLURM SLURM_PROCID/SLURM_NTASKS", "slurm", local)
    return Shard()


def pick_device(device: str | None, shard: Shard, cuda_devices: int) -> str | None:
    """The device for this process: with several GPUs on the node and ``device`` None or
    ``"cuda"`` (no index), the GPU of its local rank (``cuda:LOCAL_RANK`` modulo the GPUs
    it sees); ``device`` as given otherwise."""
    if shard.local_rank is None or cuda_devices < 2 or device not in (None, "cuda"):
        return device
    return f"cuda:{shard.local_rank % cuda_devices}"


def canonical_order(keys: Sequence[str]) -> list[int]:
    """Positions of ``keys`` (unique output keys) sorted by key: the order the plan is
    made in, the same whatever order the inputs were given or found in. Plain string
    order (code points) is the same on every Python and platform."""
    return sorted(range(len(keys)), key=lambda i: keys[i])


def assign_batches(
    batches: Sequence[Sequence[int]], lengths: Sequence[int], count: int
) -> list[list[int]]:
    """Split a batch plan into ``count`` shards of similar total audio.

    ``batches``: the plan (lists of item indices); ``lengths``: samples per item. Returns,
    per shard, the positions of its batches in the plan, in plan order. Batches go
    heaviest first to the shard holding the least audio so far (the lower index on a
    tie), then the heaviest shard trades batches with the lightest while that narrows their
    gap (:func:`_even_out`): batches are whole (a batch split differently would change the
    last bits of its items), so with few batches per shard placing alone leaves one batch
    of slack.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    weights = [sum(int(lengths[i]) for i in b) for b in batches]
    heaviest_first = sorted(range(len(batches)), key=lambda k: (-weights[k], k))
    loads = [(0, shard) for shard in range(count)]  # (audio so far, shard): a heap
    shards: list[list[int]] = [[] for _ in range(count)]
    for k in heaviest_first:
        load, shard = heapq.heappop(loads)
        shards[shard].append(k)
        heapq.heappush(loads, (load + weights[k], shard))
    _even_out(shards, weights)
    return [sorted(s) for s in shards]


def _even_out(shards: list[list[int]], weights: list[int], rounds: int = 10_000) -> None:
    """Move or swap one batch at a time between the heaviest and the lightest shard, each
    time the trade whose moved weight comes closest to half their gap, until no trade
    narrows it, their gap is within 0.5 % of the mean shard, or ``rounds`` trades. Every
    choice is by value, then position: the same shards on every run."""
    loads = [sum(weights[k] for k in s) for s in shards]
    mean = sum(loads) / len(loads)
    for _ in range(rounds):
        heavy = max(range(len(shards)), key=lambda s: (loads[s], -s))
        light = min(range(len(shards)), key=lambda s: (loads[s], s))
        gap = loads[heavy] - loads[light]
        if gap * 200 <= mean:
            return
        # the light shard's batches by weight, a move (weight 0, position -1) first
        offers = sorted([(0, -1)] + [(weights[b], b) for b in shards[light]])
        best: tuple[int, int, int] | None = None  # (|2 moved - gap|, a, b)
        for a in shards[heavy]:
            want = weights[a] - gap / 2  # the weight to take back that halves the gap
            at = bisect.bisect_left(offers, (want, -2))
            for wb, b in offers[max(0, at - 1) : at + 1]:
                moved = weights[a] - wb
                if 0 < moved < gap:
                    key = (abs(2 * moved - gap), a, b)
                    best = key if best is None or key < best else best
        if best is None:
            return
        _, a, b = best
        shards[heavy].remove(a)
        shards[light].append(a)
        loads[heavy] -= weights[a]
        loads[light] += weights[a]
        if b >= 0:
            shards[light].remove(b)
            shards[heavy].append(b)
            loads[light] -= weights[b]
            loads[heavy] += weights[b]


def shard_of_unreadable(position: int, count: int) -> int:
    """The shard that records the ``position``-th unreadable input (in canonical order):
    they cost nothing to compute, so they are dealt round the shards."""
    return position % count


BARRIER_TIMEOUT = timedelta(days=7)
"""How long the ranks of a torchrun job wait for the slowest one at the end: shards of
equal audio still finish hours apart on a busy cluster."""


def after_all_ranks(work: Callable[[], T]) -> T | None:
    """Under torchrun: wait until every rank has got here, let rank 0 do ``work``, and wait
    again, so that no rank ends (and no failing rank makes torchrun stop the others) before
    it is done. Returns ``work()``'s result on rank 0, None elsewhere; what ``work`` raised
    is raised on rank 0 after the second wait. A gloo group is set up from torchrun's
    variables for this and taken down again; the model never uses it."""
    dist = torch.distributed
    if not dist.is_available():
        raise UsageError("this torch has no torch.distributed: ranks cannot wait for each other")
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    result: T | None = None
    failure: BaseException | None = None
    try:
        dist.barrier()
        if dist.get_rank() == 0:
            try:
                result = work()
            except Exception as e:  # noqa: BLE001 - raised after the others were released
                failure = e
        dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()
    if failure is not None:
        raise failure
    return result
