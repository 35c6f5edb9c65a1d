"""Writers and the manifest (torn lines, dedupe, compaction, resume rule)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from w2v.pipeline.outputs import (
    ENTRY_FIELDS,
    MANIFEST,
    SETTINGS,
    ManifestWriter,
    compact_manifest,
    is_done,
    make_settings,
    new_entry,
    output_name,
    read_manifest,
    read_output,
    write_output,
)


def test_output_name():
    assert output_name("sub/a.flac", "npy") == "sub/a.flac.npy"
    assert output_name("a.wav", "safetensors") == "a.wav.safetensors"
    with pytest.raises(ValueError, match="unknown format"):
        output_name("a.wav", "pt")


def test_npy_and_safetensors_round_trip(tmp_path):
    arr = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    layers = [0, 6, 12]
    p = write_output(tmp_path / "d" / "a.wav.npy", arr, layers, "none", "npy")
    np.testing.assert_array_equal(np.load(p), arr)
    q = write_output(tmp_path / "a.wav.safetensors", arr, layers, "none", "safetensors")
    tensors = load_file(str(q))
    assert set(tensors) == {"0", "6", "12"}
    np.testing.assert_array_equal(tensors["6"], arr[1])
    np.testing.assert_array_equal(read_output(q), arr)
    with pytest.raises(ValueError, match="layers"):
        write_output(tmp_path / "x.npy", arr, [0, 1], "none", "npy")


def _entry(path, status="ok", output=None, **kw):
    return {"path": path, "status": status, "error": None, "output": output, "layers": [0], **kw}


def test_manifest_last_wins_and_torn_line_is_skipped(tmp_path):
    with ManifestWriter(tmp_path) as w:
        w.append(_entry("/a", "error"))
        w.append(_entry("/b", output="b.npy"))
        w.append(_entry("/a", output="a.npy"))
    lines = (tmp_path / MANIFEST).read_text().splitlines()
    assert len(lines) == 2  # compacted on close
    # a killed run leaves a torn line; the next run's lines must not be glued to it
    with open(tmp_path / MANIFEST, "a") as f:
        f.write('{"path": "/c", "sta')
    assert set(read_manifest(tmp_path)) == {"/a", "/b"}
    w = ManifestWriter(tmp_path)
    w.append(_entry("/c", output="c.npy"))
    w.close(compact=False)
    entries = read_manifest(tmp_path)
    assert set(entries) == {"/a", "/b", "/c"} and entries["/a"]["status"] == "ok"
    compact_manifest(tmp_path)
    parsed = [json.loads(line) for line in (tmp_path / MANIFEST).read_text().splitlines()]
    assert sorted(e["path"] for e in parsed) == ["/a", "/b", "/c"]


def test_manifest_drops_ok_entry_whose_output_was_taken(tmp_path):
    with ManifestWriter(tmp_path) as w:
        w.append(_entry("/x/a.wav", output="a.wav.npy"))
        w.append(_entry("/y/a.wav", output="a.wav.npy"))
    assert list(read_manifest(tmp_path)) == ["/y/a.wav"]


def test_is_done(tmp_path):
    settings = {"layers": [0], "pool": "mean"}
    e = _entry("/a", output="a.npy", pool="mean")
    assert not is_done(e, settings, tmp_path)  # output file missing
    (tmp_path / "a.npy").write_bytes(b"x")
    assert is_done(e, settings, tmp_path)
    assert is_done(e, settings, tmp_path, "a.npy")
    assert not is_done(e, settings, tmp_path, "sub/a.npy")  # the input now maps elsewhere
    assert not is_done(e, {**settings, "pool": "stats"}, tmp_path)
    assert not is_done({**e, "status": "error"}, settings, tmp_path)
    assert not is_done(None, settings, tmp_path)


SETTINGS_EXAMPLE = dict(
    layers=[0, 6],
    pool="mean",
    format="npy",
    model="/m",
    dtype="float32",
    backend="torch",
    dtype_out="float32",
    channel=None,
    head=None,
    labels=None,
)


def test_entries_are_built_from_the_schema(tmp_path):
    settings = make_settings(**dict(reversed(SETTINGS_EXAMPLE.items())))
    assert tuple(settings) == SETTINGS and set(SETTINGS) < set(ENTRY_FIELDS)
    entry = new_entry("/a", settings, duration=1.5, output="a.npy")
    assert tuple(entry) == ENTRY_FIELDS
    assert (entry["path"], entry["status"], entry["duration"], entry["frames"]) == (
        "/a",
        "ok",
        1.5,
        None,
    )
    with pytest.raises(ValueError, match="settings"):
        make_settings(layers=[0], pool="mean")
    with pytest.raises(ValueError, match="not manifest fields"):
        new_entry("/a", settings, loudness=3)


def test_every_setting_decides_resume(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    settings = make_settings(**SETTINGS_EXAMPLE)
    entry = new_entry("/a", settings, output="a.npy")
    assert is_done(entry, settings, tmp_path)
    for name in SETTINGS:
        assert not is_done(entry, {**settings, name: "changed"}, tmp_path), name
