"""The output directory of ``w2v embed``: one set of settings per directory, what the manifest
records about windows, and file modes that follow the umask."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.pipeline.cli_runs import manifest_lines, run_cli, write_audio
from w2v.errors import UsageError
from w2v.pipeline import embed_files
from w2v.pipeline.outputs import LATER_SETTINGS, LOCK, MANIFEST, read_manifest


def test_other_settings_are_refused_or_replaced_whole(tmp_path, ckpt):
    root = tmp_path / "in"
    for i in range(3):
        write_audio(root / f"f{i}.wav", seed=i)
    out = tmp_path / "out"
    code, err, _ = run_cli(root, "--model", ckpt, "--out", out)
    assert code == 0, err
    before = (out / MANIFEST).read_bytes()
    code, err, _ = run_cli(
        root, "--model", ckpt, "--out", out, "--format", "safetensors", "--pool", "stats"
    )
    assert code == 2, err
    (line,) = err.splitlines()
    assert 'pool: "mean" there, "stats" now' in line
    assert 'format: "npy" there, "safetensors" now' in line and "--overwrite" in line
    assert (out / MANIFEST).read_bytes() == before  # nothing touched
    code, err, _ = run_cli(
        root, "--model", ckpt, "--out", out, "--format", "safetensors", "--overwrite"
    )
    assert code == 0, err
    assert not list(out.glob("*.npy"))  # the old format's files went with their entries
    entries = manifest_lines(out)
    assert len(entries) == 3 and {e["format"] for e in entries} == {"safetensors"}
    assert all((out / e["output"]).is_file() for e in entries)


def test_a_directory_made_before_later_settings_existed_still_resumes(tmp_path, ckpt):
    # entries written before ``backend`` and ``dtype_out`` existed lack them: they read as
    # the values those runs used, so the rerun skips them instead of refusing the directory
    root = tmp_path / "in"
    for i in range(2):
        write_audio(root / f"f{i}.wav", seed=i)
    out = tmp_path / "out"
    assert embed_files([root], ckpt, out).ok == 2
    lines = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    for entry in lines:
        for name in LATER_SETTINGS:
            del entry[name]
    (out / MANIFEST).write_text("".join(json.dumps(e) + "\n" for e in lines))
    again = embed_files([root], ckpt, out)
    assert (again.ok, again.skipped) == (0, 2)
    with pytest.raises(UsageError, match='dtype_out: "float32" there, "float16" now'):
        embed_files([root], ckpt, out, dtype_out="float16")


def test_the_manifest_records_the_windows_actually_used(tmp_path, ckpt):
    root = tmp_path / "in"
    long, short = write_audio(root / "long.wav", 1.5), write_audio(root / "short.wav", 0.5)
    out = tmp_path / "out"
    first = embed_files([root], ckpt, out, chunk_seconds=1.0, context_seconds=0.25)
    entries = read_manifest(out)
    assert (entries[str(long)]["chunk_seconds"], entries[str(long)]["context_seconds"]) == (
        1.0,
        0.25,
    )
    assert (entries[str(short)]["chunk_seconds"], entries[str(short)]["context_seconds"]) == (
        None,
        None,
    )
    assert first.ok == 2
    again = embed_files([root], ckpt, out, chunk_seconds=1.0, context_seconds=0.25)
    assert (again.ok, again.skipped) == (0, 2)
    # never chunk: only the input that was computed in windows is computed again
    whole = embed_files([root], ckpt, out, chunk_seconds=0)
    assert (whole.ok, whole.skipped) == (1, 1)
    assert read_manifest(out)[str(long)]["chunk_seconds"] is None
    auto = embed_files([root], ckpt, out)  # the default chunks neither of these
    assert (auto.ok, auto.skipped) == (0, 2)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, ckpt, umask):
    root = tmp_path / "in"
    write_audio(root / "a.wav")
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        embed_files([root], ckpt, out, fmt="npy")
        embed_files([root], ckpt, out, fmt="safetensors", overwrite=True)
        with pytest.raises(UsageError):
            embed_files([root], ckpt, out, fmt="npy")
    finally:
        os.umask(old)
    for name in ("a.wav.safetensors", MANIFEST, LOCK):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name
