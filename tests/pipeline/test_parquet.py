"""``--format parquet`` and ``--dtype-out``: rows equal to the per-file outputs, parts of a
bounded size that other tools read, a manifest naming each input's part, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.cli_runs import KillAfter, Killed, run_cli, write_audio
from w2v.pipeline import embed_files
from w2v.pipeline.merge import merge_shards
from w2v.pipeline.outputs import MANIFEST, read_manifest
from w2v.pipeline.parquet import PARQUET_DIR, read_parquet
from w2v.pipeline.read import read_embeddings

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

RUN = dict(layers="0,2", batch_seconds=1.5, env={})
SECONDS = (0.3, 0.45, 0.5, 0.62, 0.7, 0.81, 0.9)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    for i, s in enumerate(SECONDS):
        write_audio(root / ("sub" if i % 2 else "") / f"f{i}.wav", seconds=s, seed=i)
    return root


def _npy(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix()[:-4]: np.load(p) for p in out.rglob("*.npy")}


@pytest.mark.parametrize("pool", ["mean", "none"])
def test_rows_equal_the_per_file_outputs_and_parts_are_bounded(tmp_path, audio, ckpt, pool):
    npy_out = _run(tmp_path / "npy", audio, ckpt, pool=pool)
    per_file = _npy(npy_out)
    out = tmp_path / "pq"
    # a few hundred bytes a part: several parts, each holding whole rows
    summary = embed_files([audio], str(ckpt), out, fmt="parquet", pool=pool, part_bytes=600, **RUN)
    assert summary.ok == len(SECONDS)
    parts = sorted((out / PARQUET_DIR).iterdir())
    assert len(parts) > 2 and all(p.suffix == ".parquet" for p in parts)
    # the manifest names the part holding each input, and each part holds exactly those
    entries = read_manifest(out)
    for part in parts:
        table = pq.read_table(part)
        held = {str(audio / k) for k in table.column("path").to_pylist()}
        assert held == {
            p for p, e in entries.items() if e["output"] == f"{PARQUET_DIR}/{part.name}"
        }
        assert _values(table.schema.field("layer_2").type) == pa.float32()
        assert json.loads(table.schema.metadata[b"w2v"])["pool"] == pool
    # pandas reads the folder without w2v; values equal the npy outputs exactly
    frame = pd.read_parquet(out / PARQUET_DIR)
    assert sorted(frame["path"]) == sorted(per_file)
    for row in frame.itertuples():
        for j, layer in enumerate((0, 2)):
            got = np.stack(getattr(row, f"layer_{layer}"))
            np.testing.assert_array_equal(got, per_file[row.path][j])
        assert row.frames == entries[str(audio / row.path)]["frames"]
    # w2v reads it memory-mapped: pooled layers as one matrix, frames as views
    keys, values = read_parquet(out)
    assert sorted(keys) == sorted(per_file) and set(values) == {0, 2}
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(values[2][i], per_file[key][1])
    # and w2v.read_embeddings finds each input's row: the same as from the npy files
    got, want = read_embeddings(out), read_embeddings(npy_out)
    assert got.paths == want.paths and got.frames == want.frames
    for layer in (0, 2):
        assert len(got.arrays[layer]) == len(want.arrays[layer]) == len(SECONDS)
        for a, b in zip(got.arrays[layer], want.arrays[layer], strict=True):
            np.testing.assert_array_equal(a, b)


def _values(t):
    """The value type inside (lists of) fixed-size lists."""
    while hasattr(t, "value_type"):
        t = t.value_type
    return t


def _run(out: Path, audio: Path, ckpt: Path, **kw) -> Path:
    embed_files([audio], str(ckpt), out, **{**RUN, **kw})
    return out


def test_duckdb_and_datasets_read_it_when_installed(tmp_path, audio, ckpt):
    out = _run(tmp_path / "pq", audio, ckpt, fmt="parquet")
    checked = 0
    try:
        import duckdb
    except ImportError:
        pass
    else:
        glob = str(out / PARQUET_DIR / "*.parquet")
        assert duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchone()[0] == len(SECONDS)
        checked += 1
    try:
        import datasets
    except ImportError:
        pass
    else:
        ds = datasets.load_dataset("parquet", data_files=str(out / PARQUET_DIR / "*.parquet"))
        assert len(ds["train"]) == len(SECONDS) and len(ds["train"][0]["layer_0"]) == 32
        checked += 1
    if not checked:
        pytest.skip("neither duckdb nor datasets is installed")


def test_a_killed_run_keeps_whole_parts_and_resumes(tmp_path, audio, ckpt):
    out = tmp_path / "pq"
    with pytest.raises(Killed):
        embed_files(
            [audio], str(ckpt), out, fmt="parquet", part_bytes=300, progress=KillAfter(3), **RUN
        )
    # a part written whose entries never reached the manifest (killed in between) is not
    # kept, nor one whose entries are there in part (a line torn by a full disk): its rows
    # are computed again, and no reader sees an input twice
    stray = out / PARQUET_DIR / "part-00042.parquet"
    stray.write_bytes((out / PARQUET_DIR / "part-00000.parquet").read_bytes())
    lines = (out / MANIFEST).read_text().splitlines(keepends=True)
    torn = json.loads(lines[-1])["output"]
    (out / MANIFEST).write_text("".join(lines[:-1]))
    first = {p.name: p.stat().st_mtime_ns for p in (out / PARQUET_DIR).iterdir()}
    kept = {p: e for p, e in read_manifest(out).items() if e["output"] != torn}
    assert len(first) == 3 and len(kept) == 2
    summary = embed_files([audio], str(ckpt), out, fmt="parquet", part_bytes=300, **RUN)
    assert summary.skipped == len(kept) and summary.ok == len(SECONDS) - len(kept)
    assert not stray.exists() and not (out / torn).exists()  # nor is its name used again
    for name, stamp in first.items():  # whole parts are never rewritten
        if f"{PARQUET_DIR}/{name}" not in (torn, f"{PARQUET_DIR}/{stray.name}"):
            assert (out / PARQUET_DIR / name).stat().st_mtime_ns == stamp
    frame = pd.read_parquet(out / PARQUET_DIR)
    assert sorted(frame["path"]) == sorted(_npy(_run(tmp_path / "npy", audio, ckpt)))


def test_sharded_parquet_equals_a_single_run(tmp_path, audio, ckpt):
    single = _run(tmp_path / "single", audio, ckpt, fmt="parquet", pool="none")
    out = tmp_path / "sharded"
    for index in range(2):
        embed_files(
            [audio],
            str(ckpt),
            out,
            fmt="parquet",
            pool="none",
            **{**RUN, "env": {"SLURM_PROCID": str(index), "SLURM_NTASKS": "2"}},
        )
    merge_shards(out)
    names = sorted(p.name for p in (out / PARQUET_DIR).iterdir())
    assert names[0].startswith("shard-00000-of-00002.part-") and len(names) == 2
    keys, values = read_parquet(out)
    want_keys, want = read_parquet(single)
    assert sorted(keys) == sorted(want_keys)
    for layer in (0, 2):
        got = dict(zip(keys, values[layer], strict=True))
        for k, v in zip(want_keys, want[layer], strict=True):
            np.testing.assert_array_equal(got[k], v)
    a, b = read_manifest(out), read_manifest(single)
    assert list(a) == list(b)
    for path in a:  # the same entries but for the part each input went to
        assert {**a[path], "output": None} == {**b[path], "output": None}


def test_float16_outputs_halve_the_disk_within_half_precision(tmp_path, audio, ckpt):
    full = _npy(_run(tmp_path / "f32", audio, ckpt, pool="none"))
    half = _npy(_run(tmp_path / "f16", audio, ckpt, pool="none", dtype_out="float16"))
    for key, a in full.items():
        assert half[key].dtype == np.float16 and half[key].nbytes * 2 == a.nbytes
        # round to nearest: at most half a unit in the last place of float16 (2^-11 relative)
        np.testing.assert_allclose(half[key].astype(np.float32), a, rtol=2**-11, atol=2**-24)
    assert read_manifest(tmp_path / "f16")[str(audio / "f0.wav")]["dtype_out"] == "float16"
    out = _run(tmp_path / "pq16", audio, ckpt, fmt="parquet", dtype_out="float16")
    table = pq.read_table(next((out / PARQUET_DIR).iterdir()))
    assert _values(table.schema.field("layer_0").type) == pa.float16()


def test_cli_parquet_and_dtype_out(tmp_path, audio, ckpt):
    out = tmp_path / "out"
    code, err, _ = run_cli(
        audio, "--model", ckpt, "--out", out, "--format", "parquet", "--dtype-out", "float16"
    )
    assert code == 0, err
    assert pd.read_parquet(out / PARQUET_DIR)["layer_0"].map(len).eq(32).all()


def test_an_input_computed_again_takes_its_whole_part_with_it(tmp_path, audio, ckpt):
    """Other windows (``chunk_seconds``) recompute the inputs they change; a part holding one
    is replaced whole, so the folder never shows an input twice."""
    out = tmp_path / "pq"
    embed_files([audio], str(ckpt), out, fmt="parquet", chunk_seconds=0.6, **RUN)
    windowed = {p for p, e in read_manifest(out).items() if e["chunk_seconds"] is not None}
    assert 0 < len(windowed) < len(SECONDS)
    summary = embed_files([audio], str(ckpt), out, fmt="parquet", **RUN)
    assert summary.ok >= len(windowed)
    frame = pd.read_parquet(out / PARQUET_DIR)
    assert sorted(frame["path"]) == sorted(str(p.relative_to(audio)) for p in audio.rglob("*.wav"))
    assert all(e["chunk_seconds"] is None for e in read_manifest(out).values())
