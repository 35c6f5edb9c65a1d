"""Duration-sorted batch planning, padding, and read-ahead."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from w2v.pipeline.batching import pad, parallel_map, plan_batches, prefetch


@pytest.mark.parametrize("seed", range(5))
def test_plan_covers_every_item_within_budget(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(400, 16000 * 30, size=int(rng.integers(1, 200))).tolist()
    budget_s = float(rng.uniform(5, 120))
    batches = plan_batches(lengths, budget_s)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or longest * len(b) <= budget_s * 16000
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    # longest first, and batches do not interleave: similar durations go together
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)
    for a, b in zip(batches, batches[1:], strict=False):
        assert min(lengths[i] for i in a) >= max(lengths[i] for i in b)


def test_plan_packs_greedily_and_isolates_long_items():
    sec = 16000
    lengths = [2 * sec, 1 * sec, 50 * sec, 2 * sec, 1 * sec, 1 * sec]
    batches = plan_batches(lengths, 4)
    assert batches[0] == [2]  # longer than the budget on its own
    assert batches[1] == [0, 3]  # 2 s × 2 = 4 s
    assert batches[2] == [1, 4, 5]  # 1 s × 3
    with pytest.raises(ValueError):
        plan_batches(lengths, 0)


def test_pad():
    waves = [np.arange(5, dtype=np.float32) + 1, np.ones(3, np.float32)]
    x, lengths = pad(waves)
    assert x.shape == (2, 5) and x.dtype == torch.float32
    assert lengths.tolist() == [5, 3] and lengths.dtype == torch.int64
    assert x[1, 3:].abs().sum() == 0 and x[0].tolist() == [1, 2, 3, 4, 5]


def test_prefetch_keeps_order_reads_ahead_and_isolates_failures():
    calls: list[int] = []
    lock = threading.Lock()

    def load(i: int) -> int:
        with lock:
            calls.append(i)
        if i == 4:
            raise ValueError("bad item 4")
        return i * 10

    batches = [[0, 1], [2, 3, 4], [5], [6, 7]]
    gen = prefetch(batches, load, workers=2, ahead=1)
    first = next(gen)
    assert first == [0, 10]
    # batch 0 handed out: batches 1 and 2 are being decoded ahead, batch 3 is not yet
    deadline = time.monotonic() + 5
    while not {2, 3, 4, 5} <= set(calls) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {2, 3, 4, 5} <= set(calls)
    assert 6 not in calls and 7 not in calls
    second = next(gen)
    assert second[:2] == [20, 30] and isinstance(second[2], ValueError)
    assert list(gen) == [[50], [60, 70]]


def test_prefetch_close_stops_work():
    started = []

    def load(i):
        started.append(i)
        return i

    gen = prefetch([[i] for i in range(100)], load, workers=1, ahead=1)
    next(gen)
    gen.close()
    assert len(started) < 100


def test_parallel_map_returns_exceptions_in_place():
    out = parallel_map(lambda x: 1 / x, [1, 0, 2], workers=2)
    assert out[0] == 1 and isinstance(out[1], ZeroDivisionError) and out[2] == 0.5
