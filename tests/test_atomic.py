"""Atomic writes: a failed write leaves the old file and no temporary; stale temporaries go."""

from __future__ import annotations

import pytest

from w2v.atomic import TMP_SUFFIX, atomic_write, atomic_write_file, remove_stale_temporaries


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.npy"
    target.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write_file(target, boom)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary left behind


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / f".a.npy.xyz{TMP_SUFFIX}").write_bytes(b"x")
    (tmp_path / "keep.npy").write_bytes(b"x")
    assert remove_stale_temporaries([tmp_path, tmp_path / "missing"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npy"]


def test_atomic_write_by_path(tmp_path):
    target = tmp_path / "sub" / "c.json"
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["c.json"]
