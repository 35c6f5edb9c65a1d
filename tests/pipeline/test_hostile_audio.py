"""Hostile audio and file names given to ``w2v embed``: names that are not UTF-8, absurd sample
rates, FIFOs and devices, an hour of silence in a small file. Each is embedded or reported
as one line, with bounded memory, and never hangs."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import soundfile as sf

from tests.pipeline.cli_runs import (
    manifest_lines,
    run_cli,
    wav_bytes,
    write_audio,
)
from w2v.errors import AudioError
from w2v.pipeline import audio
from w2v.pipeline.audio import MAX_AUDIO_SECONDS, MIN_SAMPLE_RATE
from w2v.pipeline.outputs import read_manifest

PEAK_MB = 500
"""Peak RSS allowed to a CLI run on a hostile file (torch and the tiny model take ~250 MB)."""


@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes on Linux")
def test_a_file_name_that_is_not_utf8_is_embedded_and_resumed(tmp_path, ckpt):
    root = tmp_path / "in"
    odd = os.path.join(os.fsencode(root), b"caf\xe9.wav")
    write_audio(odd, seed=1)
    write_audio(root / "plain.wav", seed=1)  # the same audio under a plain name
    out = tmp_path / "out"
    code, err, _ = run_cli(root, "--model", ckpt, "--out", out)
    assert code == 0, err
    assert "2 ok, 0 failed, 0 skipped" in err
    entries = manifest_lines(out)  # valid UTF-8 JSON Lines
    assert sorted(os.fsencode(e["path"]) for e in entries) == sorted(
        [odd, os.fsencode(root / "plain.wav")]
    )
    assert b"\\udce9" in (out / "manifest.jsonl").read_bytes()  # the documented escape
    (ours,) = [e for e in entries if os.fsencode(e["path"]) == odd]
    assert os.fsencode(ours["output"]) == b"caf\xe9.wav.npy"
    np.testing.assert_array_equal(
        np.load(os.path.join(os.fsencode(out), b"caf\xe9.wav.npy")), np.load(out / "plain.wav.npy")
    )
    code, err, _ = run_cli(root, "--model", ckpt, "--out", out)
    assert code == 0 and "0 ok, 0 failed, 2 skipped" in err, err


@pytest.mark.parametrize("rate", [1, MIN_SAMPLE_RATE - 1])
def test_absurdly_low_sample_rate_is_one_error_with_bounded_memory(tmp_path, ckpt, rate):
    """20 KB "at 1 Hz" is 10,000 s: resampling it to 16 kHz took gigabytes."""
    root = tmp_path / "in"
    root.mkdir()
    noise = np.random.default_rng(0).integers(-3000, 3000, 10_000)
    (root / "slow.wav").write_bytes(wav_bytes(rate, noise))
    write_audio(root / "fine.wav")
    code, err, peak = run_cli(root, "--model", ckpt, "--out", tmp_path / "out", timeout=60)
    assert code == 1, err
    errors = [x for x in err.splitlines() if "error:" in x]
    assert len(errors) == 1 and "slow.wav" in errors[0]
    assert f"sample rate {rate} Hz" in errors[0] and str(MIN_SAMPLE_RATE) in errors[0]
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    ok = read_manifest(tmp_path / "out")[str(root / "fine.wav")]
    assert ok["status"] == "ok"


def test_rate_bounds_apply_to_headers_decoding_and_arrays(tmp_path):
    path = tmp_path / "low.wav"
    path.write_bytes(wav_bytes(MIN_SAMPLE_RATE - 1, np.zeros(100)))
    for read in (audio.probe, audio.load):
        with pytest.raises(AudioError, match="sample rate 999 Hz"):
            read(path)
    with pytest.raises(AudioError, match="sample rate 1 Hz"):
        audio.prepare(np.zeros(1000, np.float32), 1)
    path.write_bytes(wav_bytes(MIN_SAMPLE_RATE, np.zeros(100)))
    wave, info = audio.load(path)  # the minimum itself is accepted: 16x upsampling
    assert info.sample_rate == MIN_SAMPLE_RATE and wave.shape[0] == 1600


def test_length_limit_is_checked_on_the_header_and_while_decoding(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "a.wav", seconds=2.0)
    monkeypatch.setattr(audio, "MAX_AUDIO_SECONDS", 1.0)
    for read in (audio.probe, audio.load):
        with pytest.raises(AudioError, match="limit is"):
            read(path)
    # a header that understates the length: decoding stops at the limit all the same
    monkeypatch.setattr(audio, "_checked_info", lambda r, c, f: audio.AudioInfo(r, c, 1))
    with pytest.raises(AudioError, match="limit is"):
        audio.load(path)
    assert MAX_AUDIO_SECONDS >= 3600  # long recordings stay possible


def test_decoding_in_blocks_matches_decoding_whole(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "a.wav", seconds=1.0, rate=44100)
    whole, _ = audio.load(path)
    monkeypatch.setattr(audio, "DECODE_BLOCK", 1000)
    blocks, info = audio.load(path)
    np.testing.assert_array_equal(blocks, whole)
    assert info.frames == 44100


def test_an_hour_of_compressed_silence_is_embedded_in_bounded_memory(tmp_path, ckpt):
    """An hour of silence is 180 KB of FLAC and 230 MB as 16 kHz float32 (twice that while
    its decoded blocks were joined): a long file is streamed window by window instead."""
    path = tmp_path / "quiet.flac"
    with sf.SoundFile(path, "w", 16000, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(6):
            f.write(np.zeros(16000 * 600, np.int16))
    assert path.stat().st_size < 2**20
    out = tmp_path / "out"
    code, err, peak = run_cli(path, "--model", ckpt, "--out", out, timeout=300)
    assert code == 0 and "1 ok" in err, err
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    entry = read_manifest(out)[str(path)]
    assert entry["duration"] == 3600 and entry["chunk_seconds"] is not None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_and_device_are_not_regular_files_and_never_hang(tmp_path, ckpt):
    root = tmp_path / "in"
    root.mkdir()
    os.mkfifo(root / "pipe.wav")
    (root / "zero.wav").symlink_to("/dev/zero")
    write_audio(root / "fine.wav")
    given = [root / "pipe.wav", root / "zero.wav", root / "fine.wav"]
    code, err, _ = run_cli(*given, "--model", ckpt, "--out", tmp_path / "out", timeout=60)
    assert code == 1, err
    errors = sorted(x for x in err.splitlines() if "error:" in x)
    assert len(errors) == 2
    assert "pipe.wav: not a regular file (a FIFO" in errors[0]
    assert "zero.wav: not a regular file (a character device)" in errors[1]
    assert "empty" not in err
    assert "1 ok, 2 failed" in err
