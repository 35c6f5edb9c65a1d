"""Which shard a process is, and which batches each shard gets (no model runs here)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from w2v.errors import UsageError
from w2v.pipeline.batching import CPU_BATCH_SECONDS, GPU_BATCH_SECONDS, plan_batches
from w2v.pipeline.shards import (
    Shard,
    assign_batches,
    canonical_order,
    pick_device,
    resolve_shard,
)

SR = 16000


def test_explicit_flags_win_over_the_launcher():
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "2"}
    shard = resolve_shard(8, 5, env)
    assert (shard.index, shard.count, shard.launcher) == (5, 8, "flags")
    assert "--num-shards/--shard-index" in shard.describe()
    assert shard.name == "shard-00005-of-00008"


def test_torchrun_then_slurm_then_nothing():
    torchrun = resolve_shard(env={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (torchrun.index, torchrun.count, torchrun.launcher) == (3, 4, "torchrun")
    assert torchrun.local_rank == 1 and "RANK/WORLD_SIZE" in torchrun.describe()
    # torchrun inside a SLURM allocation: torchrun's numbering is the one to use
    both = resolve_shard(
        env={"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}
    )
    assert (both.index, both.count) == (0, 2)
    slurm = resolve_shard(env={"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"})
    assert (slurm.index, slurm.count, slurm.launcher, slurm.local_rank) == (5, 8, "slurm", 1)
    assert "SLURM_PROCID/SLURM_NTASKS" in slurm.describe()
    assert not resolve_shard(env={"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).sharded
    alone = resolve_shard(env={})
    assert (alone.index, alone.count, alone.sharded) == (0, 1, False)


def test_slurm_job_arrays():
    # --array=1-16: task ids 1..16 are shards 0..15
    array = {
        "SLURM_ARRAY_TASK_ID": "4",
        "SLURM_ARRAY_TASK_COUNT": "16",
        "SLURM_ARRAY_TASK_MIN": "1",
    }
    shard = resolve_shard(env=array)
    assert (shard.index, shard.count) == (3, 16)
    assert "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT" in shard.describe()
    # each array task running 2 tasks (srun): 32 shards
    shard = resolve_shard(env={**array, "SLURM_NTASKS": "2", "SLURM_PROCID": "1"})
    assert (shard.index, shard.count) == (7, 32)
    with pytest.raises(UsageError, match="step 2"):
        resolve_shard(env={**array, "SLURM_ARRAY_TASK_STEP": "2"})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_shards=4), "go together"),
        (dict(shard_index=1), "go together"),
        (dict(num_shards=4, shard_index=4), "0 to 3"),
        (dict(num_shards=0, shard_index=0), "1 to"),
        (dict(env={"RANK": "x", "WORLD_SIZE": "2"}), "RANK='x' is not an integer"),
        (dict(env={"RANK": "2", "WORLD_SIZE": "2"}), r"torchrun RANK/WORLD_SIZE\) must be 0 to 1"),
    ],
)
def test_bad_shard_settings_are_one_line_usage_errors(kwargs, match):
    with pytest.raises(UsageError, match=match) as info:
        resolve_shard(**{"env": {}, **kwargs})
    assert "\n" not in str(info.value)


def test_local_rank_picks_the_gpu_only_among_several():
    shard = Shard(3, 4, "torchrun RANK/WORLD_SIZE", "torchrun", local_rank=3)
    assert pick_device(None, shard, cuda_devices=2) == "cuda:1"
    assert pick_device("cuda", shard, cuda_devices=4) == "cuda:3"
    assert pick_device("cuda:0", shard, cuda_devices=4) == "cuda:0"  # as given
    assert pick_device("cpu", shard, cuda_devices=4) == "cpu"
    assert pick_device(None, shard, cuda_devices=1) is None  # the default device
    assert pick_device(None, Shard(), cuda_devices=8) is None


def _corpus(n: int = 10_000, seed: int = 0) -> list[int]:
    """Samples per file of a read-speech corpus: mostly 2-20 s (log-normal around 7 s, as
    LibriSpeech-like segments), a tail of long files up to 35 s and a few very short ones."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(7.0), 0.6, n), 0.5, 35.0)
    seconds[rng.choice(n, n // 100, replace=False)] = rng.uniform(0.1, 1.0, n // 100)
    return [int(s * SR) for s in seconds]


@pytest.mark.parametrize("budget", [CPU_BATCH_SECONDS, GPU_BATCH_SECONDS])
def test_shards_hold_whole_batches_of_similar_audio(budget):
    lengths = _corpus()
    plan = plan_batches(lengths, budget)
    for count in range(2, 65):
        shards = assign_batches(plan, lengths, count)
        every = sorted(b for s in shards for b in s)
        assert every == list(range(len(plan))), count  # each batch in exactly one shard
        audio = [sum(lengths[i] for b in s for i in plan[b]) for s in shards]
        assert max(audio) <= 1.05 * (sum(lengths) / count), (count, max(audio) / np.mean(audio))
        assert all(s == sorted(s) for s in shards)  # plan order within a shard


def test_more_shards_than_batches_leaves_some_empty():
    plan = [[0], [1]]
    assert assign_batches(plan, [100, 50], 3) == [[0], [1], []]


def test_canonical_order_does_not_depend_on_the_order_given():
    keys = ["b/x.wav", "a.wav", "b/a.wav", "A.wav", "é.wav"]
    ordered = [keys[i] for i in canonical_order(keys)]
    assert ordered == sorted(keys)
    shuffled = [keys[i] for i in (3, 0, 4, 2, 1)]
    assert [shuffled[i] for i in canonical_order(shuffled)] == ordered


_DIGEST = """
import hashlib, json
from tests.pipeline.test_shards import _corpus
from w2v.pipeline.batching import plan_batches
from w2v.pipeline.shards import assign_batches, canonical_order
lengths = _corpus(2000, seed=1)
keys = [f"spk{i % 37}/utt{i}.flac" for i in range(len(lengths))]
order = canonical_order(keys)
plan = plan_batches([lengths[i] for i in order], 30.0)
shards = [assign_batches(plan, [lengths[i] for i in order], n) for n in (2, 7, 64)]
print(hashlib.sha256(json.dumps([order, plan, shards]).encode()).hexdigest())
"""


def test_shards_are_the_same_under_any_hash_seed():
    """This process (a random hash seed, unless PYTHONHASHSEED says otherwise) and a child
    with another seed make the same order, plan and shards."""
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    proc = subprocess.run(
        [sys.executable, "-c", _DIGEST],
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    here = io.StringIO()
    with contextlib.redirect_stdout(here):
        exec(_DIGEST, {})
    assert proc.stdout.strip() == here.getvalue().strip()
