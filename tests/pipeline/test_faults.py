"""Faults around ``w2v embed``: runs killed at random points, torn manifests, a full disk,
two runs into one directory. Whatever happens, a rerun finishes with nothing lost."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO
from tests.pipeline.cli_runs import (
    cli_command,
    env,
    manifest_lines,
    run_cli,
    write_audio,
)
from w2v.pipeline.outputs import LOCK, MANIFEST

N_FILES = 10


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Ten short files with names holding a two-byte UTF-8 character."""
    root = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(0)
    for i in range(N_FILES):
        write_audio(root / f"é{i}.wav", seconds=float(rng.uniform(0.5, 1.0)), seed=i)
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory, ckpt, inputs):
    """The outputs of one uninterrupted run: the reference every faulty run must reach."""
    out = tmp_path_factory.mktemp("clean")
    code, err, _ = run_cli(*_args(inputs, ckpt, out, "--pool", "none"))
    assert code == 0, err
    return out


def _args(inputs, ckpt, out, *extra):
    # one file per batch, so a resumed run computes each input exactly as the clean run did
    return (inputs, "--model", ckpt, "--out", out, "--batch-seconds", "1", *extra)


def _assert_complete(out, inputs, clean):
    """Every input has exactly one line, ok, and an output equal to the clean run's."""
    entries = manifest_lines(out)
    assert sorted(e["path"] for e in entries) == sorted(str(p) for p in inputs.iterdir())
    assert all(e["status"] == "ok" for e in entries), entries
    for e in entries:
        np.testing.assert_array_equal(np.load(out / e["output"]), np.load(clean / e["output"]))


def test_kill_9_at_random_points_then_resume_loses_nothing(tmp_path, ckpt, inputs, clean):
    out = tmp_path / "out"
    rng = random.Random(15)
    for _ in range(4):
        proc = subprocess.Popen(
            cli_command(*_args(inputs, ckpt, out, "--pool", "none")),
            cwd=REPO,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.5, 5.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, err, _ = run_cli(*_args(inputs, ckpt, out, "--pool", "none"))
    assert code == 0, err
    _assert_complete(out, inputs, clean)


def test_a_manifest_torn_inside_a_character_is_dropped_and_recomputed(
    tmp_path, ckpt, inputs, clean
):
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    data = (out / MANIFEST).read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = data.index("é".encode(), last) + 1  # between the two bytes of é
    (out / MANIFEST).write_bytes(data[:cut])
    code, err, _ = run_cli(*_args(inputs, ckpt, out, "--pool", "none"))
    assert code == 0, err
    assert "dropped 1 torn or unreadable line" in err
    assert f"1 ok, 0 failed, {N_FILES - 1} skipped" in err
    _assert_complete(out, inputs, clean)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where mounting is not permitted)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_stops_the_run_with_one_line_and_a_rerun_finishes(
    small_disk, ckpt, inputs, clean
):
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * (free - 48 * 1024))  # room for two or three outputs
    out = small_disk / "out"
    code, err, _ = run_cli(*_args(inputs, ckpt, out, "--pool", "none"))
    assert code == 2, err
    (line,) = err.splitlines()
    assert line.startswith("w2v embed: error: cannot write ") and "No space left" in line
    assert "free space and run again" in line
    filler.unlink()
    code, err, _ = run_cli(*_args(inputs, ckpt, out, "--pool", "none"))
    assert code == 0, err
    _assert_complete(out, inputs, clean)


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path, ckpt, inputs):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from w2v.pipeline.outputs import OutputLock\n"
            "OutputLock(sys.argv[1]).acquire()\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(out),
        ],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        code, err, _ = run_cli(*_args(inputs, ckpt, out))
        assert code == 2, err
        assert f"in use by another w2v embed run (pid {holder.pid} " in err
        assert not (out / MANIFEST).exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder's lock goes with it
        holder.wait()
        holder.stdout.close()
    assert (out / LOCK).exists()  # the stale file stays, and blocks nothing
    code, err, _ = run_cli(*_args(inputs, ckpt, out))
    assert code == 0, err


def test_two_concurrent_runs_into_one_directory_lose_nothing(tmp_path, ckpt):
    roots = [tmp_path / "a", tmp_path / "b"]
    for k, root in enumerate(roots):
        for i in range(8):
            write_audio(root / f"{root.name}{i}.wav", seconds=1.0, seed=10 * k + i)
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            cli_command(*_args(root, ckpt, out)),
            cwd=REPO,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for root in roots
    ]
    for root, proc in zip(roots, procs, strict=True):
        err = proc.communicate(timeout=300)[1].decode()
        assert "Traceback" not in err, err
        assert proc.returncode in (0, 2), err
        if proc.returncode == 2:  # refused while the other ran: nothing written for it
            assert "in use by another w2v embed run" in err
            code, err, _ = run_cli(*_args(root, ckpt, out))
            assert code == 0, err
    entries = manifest_lines(out)
    expected = sorted(str(p) for root in roots for p in root.iterdir())
    assert sorted(e["path"] for e in entries) == expected
    assert all(e["status"] == "ok" and (out / e["output"]).is_file() for e in entries)
