"""Atomic writes: a failed write leaves the old file and no temporary; stale temporaries go;
new files get the mode the umask gives."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from w2v.convert.checkpoint import Checkpoint, save

import w2v
from tests.helpers import TINY_W2V
from w2v.atomic import TMP_SUFFIX, atomic_write, atomic_write_file, remove_stale_temporaries
from w2v.config import Config


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


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask):
    """Not mkstemp's 0600: what ``open(path, "w")`` would make (converted checkpoints too)."""
    old = os.umask(umask)
    try:
        atomic_write_file(tmp_path / "a.npy", lambda f: f.write(b"x"))
        atomic_write(tmp_path / "b.json", lambda tmp: tmp.write_text("{}"))
        torch.manual_seed(0)
        model = w2v.from_config(Config(**TINY_W2V))
        save(Checkpoint(model.config, model.state_dict()), tmp_path / "ckpt")
    finally:
        os.umask(old)
    files = [tmp_path / "a.npy", tmp_path / "b.json", *(tmp_path / "ckpt").iterdir()]
    assert len(files) == 4
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


def test_a_name_near_the_file_system_limit_can_be_written(tmp_path):
    target = tmp_path / ("a" * 250 + ".npy")  # 254 bytes: its own temporary name is shorter
    atomic_write_file(target, lambda f: f.write(b"x"))
    assert target.read_bytes() == b"x"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
