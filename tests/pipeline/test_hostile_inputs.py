"""``w2v embed`` and ``w2v.embed`` against careless or hostile inputs that are not audio: file
names that would write on the terminal, list files that are not lists, an output directory
whose manifest or lock file is not what w2v left there, a manifest of wrong types, and
options out of range. Each is one clean error line (or a per-input error) and never reaches
outside ``--out``."""

from __future__ import annotations

import json
import os
import subprocess
import warnings

import numpy as np
import pytest
import torch

import w2v
from tests.helpers import TINY_W2V
from tests.pipeline.cli_runs import write_audio
from w2v.cli import main
from w2v.config import Config
from w2v.errors import AudioError, UsageError
from w2v.loading import check_device, load_model
from w2v.pipeline import embed, embed_files
from w2v.pipeline.outputs import LOCK, MANIFEST, read_manifest


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return w2v.from_config(Config(**TINY_W2V))


@pytest.fixture
def audio_dir(tmp_path):
    for name in ("a", "b"):
        write_audio(tmp_path / "in" / f"{name}.wav")
    return tmp_path / "in"


def _embed(capsys, *argv) -> tuple[int, str]:
    code = main(["embed", *map(os.fsdecode, argv)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Warning" not in err, err
    return code, err


# Text from file names is escaped where it is printed ---------------------------------------


def test_an_error_naming_a_hostile_file_is_one_escaped_line(tmp_path, ckpt, capsys):
    bad = tmp_path / "in" / "esc\x1b[2Jfake\nline.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"not audio")
    code, err = _embed(capsys, bad.parent, "--model", ckpt, "--out", tmp_path / "out")
    assert code == 1
    assert "\x1b" not in err and "\\x1b[2Jfake\\nline.wav" in err
    assert len(err.splitlines()) == 2  # the error and the summary
    [entry] = [json.loads(line) for line in (tmp_path / "out" / MANIFEST).read_text().splitlines()]
    assert entry["path"] == str(bad) and "\n" not in entry["error"]


def test_unrecognised_arguments_are_escaped(tmp_path, ckpt, capsys):
    with pytest.raises(SystemExit) as e:
        main(["embed", str(tmp_path), "--model", str(ckpt), "--out", "o", "--x\x1b[2J"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "\x1b" not in err and "--x\\x1b[2J" in err


# List files ------------------------------------------------------------------------------


def test_a_list_naming_files_that_are_not_utf8_embeds_them(tmp_path, ckpt, capsys):
    root = os.fsencode(tmp_path)
    write_audio(root + b"/caf\xe9.wav")
    (tmp_path / "list.txt").write_bytes(b"caf\xe9.wav\r\n")
    code, err = _embed(capsys, tmp_path / "list.txt", "--model", ckpt, "--out", tmp_path / "out")
    assert code == 0, err
    [entry] = read_manifest(tmp_path / "out").values()
    assert os.fsencode(entry["path"]) == root + b"/caf\xe9.wav" and entry["status"] == "ok"


@pytest.mark.parametrize(
    "content, match",
    [(b"a.wav\n\x00\x00b.wav\n", "line 2 holds a NUL byte"), (b"x" * 70_000, "line 1 is longer")],
    ids=["nul", "long-line"],
)
def test_a_list_file_that_is_no_text_is_a_usage_error(tmp_path, ckpt, capsys, content, match):
    (tmp_path / "list.txt").write_bytes(content)
    code, err = _embed(capsys, tmp_path / "list.txt", "--model", ckpt, "--out", tmp_path / "out")
    assert code == 2 and match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_lists_are_not_read_inside_lists(tmp_path, audio_dir, model):
    (tmp_path / "a.txt").write_text(f"{audio_dir / 'a.wav'}\nb.txt\na.txt\n")
    (tmp_path / "b.txt").write_text(f"{audio_dir / 'b.wav'}\na.txt\n")
    out = embed(tmp_path / "a.txt", model, errors="skip")
    assert out[0] is not None and [p.name for p in out.paths] == ["a.wav", "b.txt", "a.txt"]
    assert all("lists are not read inside lists" in why for _, why in out.errors)


def test_a_path_holding_a_nul_byte_is_a_per_input_error(audio_dir, model):
    out = embed([str(audio_dir / "a.wav"), "bad\0.wav"], model, errors="skip")
    assert out[0] is not None and out[1] is None
    assert "NUL byte" in out.errors[0][1]


# The output directory: w2v's own files only, never followed elsewhere ------------------


@pytest.mark.parametrize("name", [MANIFEST, LOCK])
def test_a_symlinked_manifest_or_lock_is_never_followed(tmp_path, audio_dir, ckpt, capsys, name):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (out / name).symlink_to(victim)
    code, err = _embed(capsys, audio_dir, "--model", ckpt, "--out", out)
    assert code == 2 and "is a symbolic link" in err and len(err.splitlines()) == 1
    assert victim.read_text() == "keep me\n"


@pytest.mark.parametrize("name", [MANIFEST, LOCK])
def test_a_manifest_or_lock_that_is_a_directory_is_a_usage_error(
    tmp_path, audio_dir, ckpt, capsys, name
):
    (tmp_path / "out" / name).mkdir(parents=True)
    code, err = _embed(capsys, audio_dir, "--model", ckpt, "--out", tmp_path / "out")
    assert code == 2 and "is a directory" in err and len(err.splitlines()) == 1


def test_an_output_directory_that_cannot_be_written_is_a_usage_error(
    tmp_path, audio_dir, ckpt, capsys
):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a read-only mount instead
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", out])
        if mounted.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs")
    else:
        out.chmod(0o555)
    try:
        code, err = _embed(capsys, audio_dir, "--model", ckpt, "--out", out)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", out])
    assert code == 2 and f"cannot write {out / LOCK}" in err and len(err.splitlines()) == 1


def _hostile(entry: dict) -> list[str]:
    """Manifest lines a careless edit or a hostile hand could leave (``entry`` is a real one)."""

    def with_(**fields) -> str:
        return json.dumps({**entry, **fields})

    return [
        "[" * 100_000 + "]" * 100_000,
        '{"path": ' + "[" * 100_000 + "]" * 100_000 + "}",
        with_(output=["a"]),
        with_(output="a\0b.wav.npy"),
        with_(duration="x"),
        with_(duration=1e308),
        with_(status="weird"),
        with_(path=5),
        with_(chunk_seconds={"a": 1}),
        with_().replace('"duration": 0.5', '"duration": NaN'),
        '{"path": "' + "x" * (17 << 20) + '"}',
    ]


def test_a_manifest_of_wrong_types_is_dropped_with_a_notice(tmp_path, audio_dir, model):
    out = tmp_path / "out"
    embed_files([audio_dir], model, out)
    entry = next(iter(read_manifest(out).values()))
    (out / MANIFEST).write_text("\n".join(_hostile(entry)) + "\n")
    notices = []
    assert read_manifest(out, notice=notices.append) == {}
    assert "dropped 11 torn or unreadable line(s)" in notices[0]
    summary = embed_files([audio_dir], model, out)
    assert (summary.ok, summary.failed) == (2, 0)


@pytest.mark.parametrize("output", ["../victim.wav.npy", "/VICTIM", LOCK, MANIFEST])
def test_overwrite_removes_only_outputs_inside_dir(tmp_path, audio_dir, model, output):
    out = tmp_path / "out"
    embed_files([audio_dir], model, out)
    victim = tmp_path / "victim.wav.npy"
    victim.write_text("keep me")
    entry = next(iter(read_manifest(out).values()))
    target = str(victim) if output == "/VICTIM" else output
    with open(out / MANIFEST, "a") as f:
        f.write(json.dumps({**entry, "path": "/x.wav", "output": target, "layers": [9]}) + "\n")
    summary = embed_files([audio_dir], model, out, overwrite=True)
    assert summary.ok == 2 and victim.read_text() == "keep me"
    assert (out / LOCK).is_file() and (out / MANIFEST).is_file()


# Options out of range: one error up front, never one per input or a traceback ----------------


@pytest.mark.parametrize(
    "option, error, match",
    [
        ({"chunk_seconds": 1e308}, UsageError, "chunk seconds must be 0"),
        ({"chunk_seconds": 0.001}, UsageError, "chunk seconds must be 0"),
        ({"chunk_seconds": "5"}, TypeError, "chunk seconds must be a number"),
        ({"chunk_seconds": 1.0, "context_seconds": float("inf")}, UsageError, "context seconds"),
        ({"batch_seconds": float("nan")}, UsageError, "batch seconds must be positive"),
        ({"batch_seconds": "5"}, TypeError, "batch seconds must be a number"),
        ({"workers": -1}, UsageError, "workers must be 1 to 64"),
        ({"workers": 10**9}, UsageError, "workers must be 1 to 64"),
        ({"workers": 2.5}, TypeError, "workers must be an integer"),
        ({"channel": "1"}, TypeError, "channel must be an integer"),
        ({"channel": True}, TypeError, "channel must be an integer"),
    ],
)
@pytest.mark.parametrize("run", ["embed", "embed_files"])
def test_options_out_of_range_are_refused_up_front(
    tmp_path, audio_dir, model, run, option, error, match
):
    with pytest.raises(error, match=match):
        if run == "embed":
            embed(audio_dir, model, **option)
        else:
            embed_files([audio_dir], model, tmp_path / "out", **option)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--layers", "\u0661\u0662"], "bad layer spec"),  # Arabic-Indic digits: not layer 12
        (["--layers", "9" * 50], "more than 6 digits"),
        (["--workers=-3"], "must be 1 to 64"),
        (["--channel", "1.5"], "expected an integer"),
        (["--batch-seconds", "inf"], "must be positive and finite"),
        (["--chunk-seconds", "1e308"], "chunk seconds must be 0"),
        (["--context-seconds", "inf"], "context seconds must be 0"),
        (["--device", "xla"], "cannot be used"),
    ],
)
def test_cli_options_out_of_range_are_one_line(tmp_path, audio_dir, ckpt, capsys, argv, match):
    try:
        code, err = _embed(capsys, audio_dir, "--model", ckpt, "--out", tmp_path / "out", *argv)
    except SystemExit as e:  # argparse
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and match in err, err
    assert len(err.splitlines()[-1]) < 400 and not (tmp_path / "out").exists()


def test_a_device_torch_is_not_built_for_is_a_usage_error():
    with pytest.raises(UsageError, match="'xla' cannot be used"):
        check_device("xla")


def test_a_model_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="model must be a w2v model"):
        load_model(42)


# In-memory waveforms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.empty(8000, device="meta"), "meta tensor"),
        (torch.zeros(8000).to_sparse(), "dense tensor"),
    ],
)
def test_tensors_without_plain_data_are_type_errors(model, x, match):
    with pytest.raises(TypeError, match=match):
        embed(x, model, sample_rate=16000)


def test_samples_beyond_float32_are_an_error_without_a_warning(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AudioError, match="NaN or Inf"):
            embed(np.full(8000, 1e300), model, sample_rate=16000)
