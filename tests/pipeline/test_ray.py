"""Ray: the Ray Data callable and ``--engine ray`` (two actors) give a local run's outputs and
manifest. One Ray session for the module; skipped when the ``ray`` extra is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.pipeline.cli_runs import write_audio
from w2v.errors import UsageError
from w2v.pipeline import embed, embed_files
from w2v.pipeline.ray_data import EmbedBatch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

RUN = dict(layers="0,2", pool="none", batch_seconds=1.5, env={})
SECONDS = (0.3, 0.45, 0.5, 0.62, 0.7, 0.81, 0.9, 1.0)


@pytest.fixture(scope="module")
def session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    for i, s in enumerate(SECONDS):
        write_audio(root / ("sub" if i % 3 else "") / f"f{i}.wav", seconds=s, seed=i)
    (root / "bad.wav").write_bytes(b"not audio")
    return root


def _files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_engine_ray_writes_what_a_local_run_writes(tmp_path, audio, ckpt, session):
    # Ray's actors run torch on one thread (OMP_NUM_THREADS=1 for a 1-CPU actor): so does
    # the local run compared with
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = tmp_path / "local"
        embed_files([audio], str(ckpt), local, **RUN)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ray"
    summary = embed_files([audio], str(ckpt), out, engine="ray", actors=2, **RUN)
    assert (summary.ok, summary.failed) == (len(SECONDS), 1)
    assert _files(out) == _files(local)  # outputs byte for byte, and the manifest


def test_map_batches_callable_takes_paths_and_arrays(audio, ckpt, session):
    paths = sorted(str(p) for p in audio.rglob("f*.wav"))
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 12000)]
    rows = [{"path": p, "array": np.zeros(1, np.float32), "sample_rate": 0} for p in paths]
    rows += [{"path": "", "array": w, "sample_rate": 16000} for w in waves]
    rows += [{"path": str(audio / "bad.wav"), "array": np.zeros(1, np.float32), "sample_rate": 0}]
    ds = ray.data.from_items(rows).map_batches(
        EmbedBatch,
        fn_constructor_kwargs=dict(model=str(ckpt), layers=[0, 2], pool="mean"),
        concurrency=2,
        batch_size=4,
        batch_format="numpy",
    )
    got = {(r["path"] or int(r["array"].shape[0])): r for r in ds.take_all()}
    want = embed(paths + [(w, 16000) for w in waves], str(ckpt), layers=[0, 2], pool="mean")
    for key, ref in zip(paths + [8000, 12000], want, strict=True):
        assert got[key]["error"] == ""
        for j, layer in enumerate((0, 2)):
            torch.testing.assert_close(got[key][f"layer_{layer}"], ref[j], rtol=1e-5, atol=1e-5)
    bad = got[str(audio / "bad.wav")]
    assert "bad.wav" in bad["error"] and np.isnan(bad["layer_0"]).all()


def test_engine_options_are_checked(tmp_path, audio, ckpt):
    with pytest.raises(UsageError, match="--actors and --gpus-per-actor go with --engine ray"):
        embed_files([audio], str(ckpt), tmp_path / "a", actors=2, env={})
    with pytest.raises(UsageError, match="runs the whole input list"):
        embed_files([audio], str(ckpt), tmp_path / "b", engine="ray", num_shards=2, shard_index=0)
    with pytest.raises(UsageError, match="--actors must be"):
        embed_files([audio], str(ckpt), tmp_path / "c", engine="ray", actors=0, env={})
