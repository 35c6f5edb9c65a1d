"""`w2v embed` end to end: exit codes, messages, options, and a run killed and resumed."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.helpers import REPO
from tests.pipeline.cli_runs import run_cli
from w2v.atomic import TMP_SUFFIX
from w2v.cli import main
from w2v.pipeline import embed
from w2v.pipeline.outputs import MANIFEST, read_manifest

SUMMARY = re.compile(
    r"^w2v embed: (\d+) ok, (\d+) failed, (\d+) skipped; \d+\.\d s of audio in \d+\.\d s"
)


def _audio(path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 1, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = 0.1 * np.random.default_rng(seed).standard_normal((int(rate * seconds), channels))
    sf.write(path, data.astype(np.float32), rate)
    return path


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _summary(err: str) -> tuple[int, int, int]:
    (line,) = [x for x in err.splitlines() if SUMMARY.match(x)]
    return tuple(int(g) for g in SUMMARY.match(line).groups())


def test_success_exit_0_and_summary(tmp_path, ckpt, capsys):
    for i, name in enumerate(["a.wav", "sub/b.wav", "sub/c.flac"]):
        _audio(tmp_path / "in" / name, 0.3 + 0.2 * i, seed=i)
    out = tmp_path / "out"
    code, err = _run(
        ["embed", str(tmp_path / "in"), "--model", str(ckpt), "--out", str(out)], capsys
    )
    assert code == 0 and _summary(err) == (3, 0, 0)
    assert np.load(out / "sub" / "c.flac.npy").shape == (3, 32)  # all layers, mean pooled
    code, err = _run(
        ["embed", str(tmp_path / "in"), "--model", str(ckpt), "--out", str(out)], capsys
    )
    assert code == 0 and _summary(err) == (0, 0, 3)
    code, err = _run(
        [
            "embed",
            str(tmp_path / "in"),
            "--model",
            str(ckpt),
            "--out",
            str(out),
            "--overwrite",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0 and _summary(err) == (3, 0, 0) and len(err.strip().splitlines()) == 1


def test_failures_exit_1_with_a_line_per_bad_input(tmp_path, ckpt, capsys):
    good = _audio(tmp_path / "good.wav")
    short = _audio(tmp_path / "short.wav", seconds=0.01)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    argv = ["embed", str(good), str(short), str(empty), "--model", str(ckpt), "--out", str(out)]
    code, err = _run(argv, capsys)
    assert code == 1 and _summary(err) == (1, 2, 0)
    errors = [line for line in err.splitlines() if line.startswith("w2v embed: error:")]
    assert len(errors) == 2
    assert any(str(short) in e and "too short" in e for e in errors)
    assert any(str(empty) in e and "empty" in e for e in errors)
    assert (out / "good.wav.npy").is_file()
    manifest = read_manifest(out)
    assert {e["status"] for e in manifest.values()} == {"ok", "error"} and len(manifest) == 3


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--layers", "9"], r"layer 9 is out of range .* 0\.\.2"),
        (["--layers", "1..2"], "bad layer spec"),
        (["--pool", "max"], "invalid choice"),
        (["--batch-seconds", "0"], "must be positive"),
        (["--model", "/no/such/model"], "cannot load model"),
    ],
)
def test_usage_errors_exit_2(tmp_path, ckpt, capsys, extra, message):
    wav = _audio(tmp_path / "a.wav")
    argv = ["embed", str(wav), "--model", str(ckpt), "--out", str(tmp_path / "out"), *extra]
    try:
        code, err = _run(argv, capsys)
    except SystemExit as e:  # argparse's own usage errors
        code, err = e.code, capsys.readouterr().err
    assert code == 2
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_allocator_setting(tmp_path, ckpt, capsys, monkeypatch):
    wav = _audio(tmp_path / "a.wav")
    argv = ["embed", str(wav), "--model", str(ckpt), "--out", str(tmp_path / "out")]
    monkeypatch.setenv("W2V_ALLOCATOR", "fastest")
    code, err = _run(argv, capsys)
    assert code == 2 and "W2V_ALLOCATOR must be one of bounded, reuse, glibc" in err
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("W2V_ALLOCATOR", "glibc")
    code, err = _run(argv, capsys)
    assert code == 0 and _summary(err) == (1, 0, 0)


def test_no_inputs_and_collisions_exit_2(tmp_path, ckpt, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _run(
        ["embed", str(tmp_path / "empty"), "--model", str(ckpt), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert code == 2 and "no inputs" in err
    a = _audio(tmp_path / "x" / "a.wav")
    b = _audio(tmp_path / "y" / "a.wav")
    code, err = _run(
        ["embed", str(a), str(b), "--model", str(ckpt), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and str(a) in err and str(b) in err


def test_list_file_safetensors_and_channel(tmp_path, ckpt, capsys):
    from safetensors.numpy import load_file

    stereo = _audio(tmp_path / "data" / "deep" / "st.wav", seconds=0.6, channels=2, seed=5)
    outside = _audio(tmp_path / "other" / "o.wav", seed=6)
    lst = tmp_path / "data" / "inputs.txt"
    lst.write_text(f"# inputs\ndeep/st.wav\n\n{outside}\n")
    out = tmp_path / "out"
    argv = ["embed", str(lst), "--model", str(ckpt), "--out", str(out), "--format", "safetensors"]
    code, err = _run([*argv, "--layers", "0,2", "--channel", "1", "--pool", "none"], capsys)
    assert code == 0, err
    tensors = load_file(str(out / "deep" / "st.wav.safetensors"))
    assert set(tensors) == {"0", "2"}
    assert (out / "o.wav.safetensors").is_file()
    # channel 1 alone, through the Python API
    data, _ = sf.read(stereo, dtype="float32")
    (want,) = embed(data[:, 1], str(ckpt), sample_rate=16000, layers=[0, 2], pool="none")
    np.testing.assert_allclose(tensors["2"], want[1], atol=1e-4, rtol=0)
    entry = read_manifest(out)[str(stereo)]
    assert entry["channels"] == 2 and entry["channel"] == 1 and entry["frames"] == want.shape[1]


def test_progress_bar_on_a_terminal(tmp_path, ckpt, monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake = Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    _audio(tmp_path / "a.wav")
    assert (
        main(["embed", str(tmp_path / "a.wav"), "--model", str(ckpt), "--out", str(tmp_path / "o")])
        == 0
    )
    text = fake.getvalue()
    assert "1/1 files" in text and "audio s" in text and SUMMARY.search(text.splitlines()[-1])


def test_killed_run_resumes_to_complete_outputs(tmp_path, ckpt, capsys):
    n = 40
    rng = np.random.default_rng(0)
    for i in range(n):
        _audio(tmp_path / "in" / f"f{i:02d}.flac", seconds=float(rng.uniform(1.0, 2.0)), seed=i)
    out = tmp_path / "out"
    argv = [
        "embed",
        str(tmp_path / "in"),
        "--model",
        str(ckpt),
        "--out",
        str(out),
        "--batch-seconds",
        "1",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "w2v.cli", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.rglob("*.npy"))) >= 3:
                break
            time.sleep(0.002)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    done = sorted(out.rglob("*.npy"))
    assert 3 <= len(done) < n
    for p in done:  # every visible output is complete
        assert np.load(p).shape == (3, 32)
    lines = (out / MANIFEST).read_text().splitlines()
    assert all(json.loads(line)["status"] == "ok" for line in lines[:-1])

    code, err = _run(argv, capsys)
    assert code == 0
    ok, failed, skipped = _summary(err)
    assert failed == 0 and ok + skipped == n and skipped >= len(lines) - 1
    manifest_lines = (out / MANIFEST).read_text().splitlines()
    assert len(manifest_lines) == n
    entries = [json.loads(line) for line in manifest_lines]
    assert sorted(e["path"] for e in entries) == sorted(str(p) for p in (tmp_path / "in").iterdir())
    assert all(e["status"] == "ok" for e in entries)
    assert len(list(out.rglob("*.npy"))) == n and not list(out.rglob(f"*{TMP_SUFFIX}"))
    for e in entries:
        assert np.isfinite(np.load(out / e["output"])).all()


# Messages that say what happened (issue 15: items 14, 20, 21) ---------------------------


@pytest.mark.parametrize("missing", ["nope", "nope.wav", "gone/"])
def test_a_missing_input_is_a_usage_error_and_nothing_is_written(tmp_path, ckpt, capsys, missing):
    good = _audio(tmp_path / "a.wav")
    out = tmp_path / "out"
    argv = ["embed", str(good), str(tmp_path / missing), "--model", str(ckpt), "--out", str(out)]
    code, err = _run(argv, capsys)
    assert code == 2 and not out.exists()
    (line,) = err.splitlines()
    assert line == f"w2v embed: error: {tmp_path / missing.rstrip('/')}: no such file or directory"


def test_a_missing_entry_of_a_list_is_that_inputs_error(tmp_path, ckpt, capsys):
    _audio(tmp_path / "a.wav")
    (tmp_path / "in.txt").write_text("a.wav\nmissing\n")
    out = tmp_path / "out"
    code, err = _run(
        ["embed", str(tmp_path / "in.txt"), "--model", str(ckpt), "--out", str(out)], capsys
    )
    assert code == 1 and _summary(err) == (1, 1, 0)
    assert f"w2v embed: error: {tmp_path / 'missing'}: no such file or directory" in err


def test_special_files_given_explicitly_are_not_regular_files(tmp_path, ckpt, capsys):
    """/dev/zero and a FIFO (no extension) reach the audio reader's check, never opened."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    good = _audio(tmp_path / "a.wav")
    out = tmp_path / "out"
    code, err = _run(
        ["embed", "/dev/zero", str(fifo), str(good), "--model", str(ckpt), "--out", str(out)],
        capsys,
    )
    assert code == 1 and _summary(err) == (1, 2, 0)
    assert "w2v embed: error: /dev/zero: not a regular file (a character device)" in err
    assert f"w2v embed: error: {fifo}: not a regular file (a FIFO" in err
    assert "extension" not in err


def test_collision_advice_for_lists_naming_outside_files_works(tmp_path, ckpt, capsys):
    a = _audio(tmp_path / "data" / "x" / "s.wav", seed=1)
    b = _audio(tmp_path / "data" / "y" / "s.wav", seed=2)
    elsewhere = tmp_path / "lists" / "in.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"{a}\n{b}\n")
    out = tmp_path / "out"
    code, err = _run(["embed", str(elsewhere), "--model", str(ckpt), "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert (
        f"give the directory {tmp_path / 'data'}, or list the files in a .txt file saved in it"
        in err
    )
    # doing what it says works, for both of its suggestions
    moved = tmp_path / "data" / "in.txt"
    moved.write_text(elsewhere.read_text())
    for given in (moved, tmp_path / "data"):
        code, err = _run(["embed", str(given), "--model", str(ckpt), "--out", str(out)], capsys)
        assert code == 0, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy")) == [
        "x/s.wav.npy",
        "y/s.wav.npy",
    ]


@pytest.fixture(scope="module")
def ckpt_with_head(tmp_path_factory):
    """An HF directory with a classification head, which loading drops with a notice."""
    from safetensors.torch import load_file, save_file

    from tests.helpers import HF_FIXTURES

    d = tmp_path_factory.mktemp("head") / "hf"
    shutil.copytree(HF_FIXTURES / "wav2vec2-group", d)
    state = {f"wav2vec2.{k}": v for k, v in load_file(str(d / "model.safetensors")).items()}
    state["classifier.weight"] = torch.zeros(2, 4)  # as in Wav2Vec2ForSequenceClassification
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def test_notices_are_clean_lines_and_quiet_keeps_only_errors_and_summary(tmp_path, ckpt_with_head):
    good = _audio(tmp_path / "a.wav")
    short = _audio(tmp_path / "short.wav", seconds=0.01)
    argv = [good, short, "--model", ckpt_with_head]
    code, err, _ = run_cli(*argv, "--out", tmp_path / "o1")
    assert code == 1 and "Warning" not in err and "loading.py" not in err
    lines = err.splitlines()
    (notice,) = [x for x in lines if "dropped" in x]
    assert notice.startswith(f"w2v embed: {ckpt_with_head}: ") and "dropped 1 weights" in notice
    assert any(x.startswith(f"w2v embed: error: {short}: ") for x in lines)

    code, err, _ = run_cli(*argv, "--out", tmp_path / "o2", "--quiet")
    lines = err.splitlines()
    assert code == 1 and len(lines) == 2, err
    assert lines[0].startswith(f"w2v embed: error: {short}: ") and SUMMARY.match(lines[1])


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("seconds, durations", [(1.0, [2.0, 0.5, 3.0, 1.0]), (0.0, [None] * 4)])
def test_progress_bar_never_passes_its_total(monkeypatch, seconds, durations):
    """Headers that under-state the audio (or say nothing): no stray comma, no negative
    ETA, no tqdm warning, and the bar ends at 100 %."""
    from w2v.cli import _Bar

    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    bar = _Bar(quiet=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's clamping warning fails the test
        bar.start(files=4, seconds=seconds, skipped=0)
        for d in durations:
            bar.item({"status": "ok", "duration": d})
        bar.close()
    text = fake.getvalue()
    assert "4/4 files" in text and "| ," not in text and "<-" not in text and "100%" in text
    assert not re.search(r"\|\s*,", text)


def test_quiet_bar_still_reports_errors(monkeypatch):
    from w2v.cli import _Bar

    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    bar = _Bar(quiet=True)
    bar.start(files=1, seconds=1.0, skipped=0)
    bar.notice("something to know")
    bar.item({"status": "error", "error": "x.wav: broken"})
    bar.close()
    assert fake.getvalue() == "w2v embed: error: x.wav: broken\n"


def test_help_says_what_overwrite_and_exit_2_cover():
    from w2v.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["embed"]
    text = " ".join(sub.format_help().split())
    assert "recompute inputs already done; replace results of other settings in DIR" in text
    assert "another run holding DIR" in text and "full disk" in text
