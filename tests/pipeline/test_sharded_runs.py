"""Sharded runs (SLURM variables set by hand, torchrun on CPU with gloo) give the single
run's outputs byte for byte and its manifest after ``w2v merge``; a killed shard resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.pipeline.cli_runs import KillAfter, Killed, env, run_cli, write_audio
from w2v.cli import main
from w2v.errors import UsageError
from w2v.pipeline import embed_files
from w2v.pipeline.merge import merge_shards, shard_journal_name, shard_manifest_name
from w2v.pipeline.outputs import MANIFEST, read_manifest
from w2v.pipeline.shards import Shard

# several batches of different shapes: the same file in another batch differs in the last bits
RUN = dict(layers="0,2", pool="none", batch_seconds=1.5)
SECONDS = (0.3, 0.45, 0.5, 0.62, 0.7, 0.81, 0.9, 1.0)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    for i, s in enumerate(SECONDS):
        write_audio(root / ("sub" if i % 3 else "") / f"f{i}.wav", seconds=s, seed=i)
    (root / "bad.wav").write_bytes(b"not audio")  # an error entry travels through shards too
    return root


def _files(out: Path) -> dict[str, bytes]:
    """Every output file and the manifest, by path relative to DIR (no shard manifests)."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith((".", "manifest.shard-"))
    }


def _slurm(index: int, count: int) -> dict[str, str]:
    return {"SLURM_PROCID": str(index), "SLURM_NTASKS": str(count), "SLURM_LOCALID": "0"}


def test_slurm_shards_equal_a_single_run_byte_for_byte(tmp_path, audio, ckpt, capsys):
    fmt = "npy"  # safetensors: the torchrun test
    single = tmp_path / "single"
    embed_files([audio], str(ckpt), single, fmt=fmt, env={}, **RUN)
    out = tmp_path / "sharded"
    for index in range(3):
        summary = embed_files([audio], str(ckpt), out, fmt=fmt, env=_slurm(index, 3), **RUN)
        assert summary.shard == Shard(index, 3, "SLURM SLURM_PROCID/SLURM_NTASKS", "slurm", 0)
        assert summary.line().startswith(f"shard {index} of 3 (0-based), from SLURM")
        assert (out / shard_manifest_name(summary.shard)).is_file()
    assert not (out / MANIFEST).exists()  # SLURM shards do not wait for each other
    assert main(["merge", str(out)]) == 0
    assert "(9 inputs from 3 shards)" in capsys.readouterr().err
    assert _files(out) == _files(single)


def test_a_killed_shard_reruns_only_what_it_had_not_written(tmp_path, audio, ckpt):
    single = tmp_path / "single"
    embed_files([audio], str(ckpt), single, env={}, **RUN)
    out = tmp_path / "sharded"
    embed_files([audio], str(ckpt), out, env=_slurm(0, 2), **RUN)
    with pytest.raises(Killed):
        embed_files([audio], str(ckpt), out, env=_slurm(1, 2), progress=KillAfter(2), **RUN)
    with pytest.raises(UsageError, match="1 shard\\(s\\) did not finish"):
        merge_shards(out)
    written = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.npy") if p.is_file()
    }
    assert len(read_manifest(out, name=shard_journal_name(Shard(1, 2)))) == 2
    summary = embed_files([audio], str(ckpt), out, env=_slurm(1, 2), **RUN)
    assert summary.skipped == 2 and summary.ok + summary.failed > 0
    for p, stamp in written.items():  # no finished file written again
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, p
    merge_shards(out)
    assert _files(out) == _files(single)


def _manifest_line(path: str, **fields) -> str:
    entry = dict(path=path, status="ok", error=None, output=Path(path).name + ".npy", pool="mean")
    entry.update(fields)
    return json.dumps(entry) + "\n"


def test_merge_refuses_missing_duplicated_and_mismatched_shards(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UsageError, match="no shard manifests"):
        merge_shards(out)
    names = [shard_manifest_name(Shard(i, 3)) for i in range(3)]
    (out / names[0]).write_text(_manifest_line("/a.wav"))
    (out / names[2]).write_text(_manifest_line("/c.wav"))
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and names[1] in err and "missing" in err
    (out / names[1]).write_text(_manifest_line("/a.wav"))  # /a.wav in shards 0 and 1
    with pytest.raises(UsageError, match=f"/a.wav in {names[0]} and {names[1]}"):
        merge_shards(out)
    (out / names[1]).write_text(_manifest_line("/b.wav", pool="stats"))
    with pytest.raises(
        UsageError, match=f"{names[1]} and {names[0]} .* different settings \\(pool\\)"
    ):
        merge_shards(out)
    (out / names[1]).write_text(_manifest_line("/b.wav"))
    (out / shard_manifest_name(Shard(0, 2))).write_text(_manifest_line("/a.wav"))
    with pytest.raises(UsageError, match="2 different shard counts"):
        merge_shards(out)
    os.unlink(out / shard_manifest_name(Shard(0, 2)))
    path, entries, shards = merge_shards(out)
    assert (entries, shards) == (3, 3)
    assert list(read_manifest(out)) == ["/a.wav", "/b.wav", "/c.wav"]
    assert path == out / MANIFEST


def test_torchrun_two_ranks_equal_a_single_run_and_rank_0_merges(tmp_path, audio, ckpt):
    if shutil.which("torchrun") is None and not _has_torch_run():
        pytest.skip("torch.distributed.run is not available")
    # the good files only: torchrun prints a traceback of its own for a rank that exits 1
    good = audio / "good.lst"
    good.write_text("".join(f"{p.relative_to(audio)}\n" for p in sorted(audio.rglob("f*.wav"))))
    args = [good, "--model", ckpt, "--layers", "0,2", "--pool", "none", "--batch-seconds", "1.5"]
    args += ["--format", "safetensors"]  # npy: the SLURM test
    single = tmp_path / "single"
    code, err, _ = run_cli(*args, "--out", single)
    assert code == 0, err
    out = tmp_path / "torchrun"
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    proc = subprocess.run(
        [*launch, "-m", "w2v.cli", "embed", *map(str, args), "--out", str(out)],
        cwd=REPO,
        env=env(),  # OMP_NUM_THREADS=1 in every process, as in the single run
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    for rank in (0, 1):
        assert f"shard {rank} of 2 (0-based), from torchrun RANK/WORLD_SIZE" in proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out / MANIFEST} (8 inputs from 2 shards)" in proc.stderr
    assert _files(out) == _files(single)


def _has_torch_run() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch.distributed.run") is not None
