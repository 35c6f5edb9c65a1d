"""Decoding, mix-down, resampling, checks and normalisation of real files written here."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from w2v.config import Config
from w2v.pipeline import audio
from w2v.pipeline.audio import AudioError

CASES = [
    # (extension, format, subtype, rate, channels)
    ("wav", "WAV", "PCM_16", 8000, 1),
    ("wav", "WAV", "PCM_24", 22050, 2),
    ("wav", "WAV", "FLOAT", 48000, 2),
    ("flac", "FLAC", "PCM_16", 44100, 1),
    ("flac", "FLAC", "PCM_24", 16000, 2),
    ("ogg", "OGG", "VORBIS", 22050, 1),
    ("ogg", "OGG", "VORBIS", 48000, 2),
]


def _signal(rate: int, channels: int, seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    cols = [
        0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(cols, axis=1).astype(np.float32)  # (samples, channels)


def _reference(path, channel=None) -> np.ndarray:
    """Independent decode: soundfile float32, mean or pick, soxr HQ to 16 kHz."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1) if channel is None else data[:, channel]
    mono = mono.astype(np.float32)
    return mono if rate == 16000 else soxr.resample(mono, rate, 16000, quality="HQ")


@pytest.mark.parametrize("ext,fmt,subtype,rate,channels", CASES)
def test_load_matches_soundfile_and_soxr(tmp_path, ext, fmt, subtype, rate, channels):
    path = tmp_path / f"x.{ext}"
    sf.write(path, _signal(rate, channels), rate, format=fmt, subtype=subtype)
    wave, info = audio.load(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert wave.dtype == np.float32 and wave.ndim == 1
    ref = _reference(path)
    assert wave.shape == ref.shape
    assert abs(wave.shape[0] - round(info.frames * 16000 / rate)) <= 1
    np.testing.assert_allclose(wave, ref, atol=1e-6)
    header = audio.probe(path)
    assert (header.sample_rate, header.channels) == (rate, channels)
    assert header.duration == pytest.approx(0.6, abs=0.01)


def test_integer_pcm_is_scaled_to_unit_range(tmp_path):
    path = tmp_path / "full.wav"
    pcm = np.array([32767, -32768, 16384, 0] * 200, dtype=np.int16)
    sf.write(path, pcm, 16000, subtype="PCM_16")
    wave, _ = audio.load(path)
    assert wave.max() == pytest.approx(32767 / 32768)
    assert wave.min() == -1.0
    assert wave[2] == pytest.approx(0.5)


def test_stereo_mean_and_channel_pick(tmp_path):
    path = tmp_path / "st.wav"
    left = np.full(1000, 0.5, np.float32)
    right = np.full(1000, -0.25, np.float32)
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    mean, _ = audio.load(path)
    np.testing.assert_allclose(mean, 0.125, atol=1e-7)
    np.testing.assert_allclose(audio.load(path, channel=0)[0], 0.5)
    np.testing.assert_allclose(audio.load(path, channel=1)[0], -0.25)
    with pytest.raises(AudioError, match="2 channel"):
        audio.load(path, channel=2)
    mono = tmp_path / "mono.wav"
    sf.write(mono, left, 16000, subtype="FLOAT")
    np.testing.assert_allclose(audio.load(mono, channel=1)[0], 0.5)  # mono files pass through


def test_normalize_is_population_zero_mean_unit_variance():
    rng = np.random.default_rng(1)
    x = (3 + 2 * rng.standard_normal(5000)).astype(np.float32)
    y = audio.normalize(x)
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert abs(float(y.mean())) < 1e-5 and float(y.std()) == pytest.approx(1.0, abs=1e-4)
    # applied only when asked, and after resampling
    assert np.array_equal(audio.prepare(x, 16000), x)
    np.testing.assert_allclose(audio.prepare(x, 16000, normalize_input=True), expected, atol=1e-5)


def test_length_limit_is_applied_after_resampling():
    # the model's receptive field, 400: 8 kHz 199 samples → 398 at 16 kHz (too short), 200 → 400
    minimum = Config.from_name("wav2vec2-base").receptive_field
    with pytest.raises(AudioError, match="too short: 398 samples"):
        audio.prepare(np.ones(199, np.float32), 8000, min_samples=minimum)
    assert audio.prepare(np.ones(200, np.float32), 8000, min_samples=minimum).shape == (400,)
    assert audio.prepare(np.ones(199, np.float32), 8000).shape == (398,)  # no minimum asked
    with pytest.raises(AudioError, match="zero-length"):
        audio.prepare(np.zeros(0, np.float32), 16000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_errors(tmp_path, bad):
    x = np.zeros(4000, np.float32)
    x[123] = bad
    path = tmp_path / "nf.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        audio.load(path)


def test_unreadable_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        audio.probe(empty)
    with pytest.raises(AudioError, match="empty"):
        audio.load(empty)
    junk = tmp_path / "junk.flac"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="header"):
        audio.probe(junk)
    with pytest.raises(AudioError, match="no such file"):
        audio.load(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        audio.load(tmp_path)


def test_corrupt_body_fails_at_decode_not_at_probe(tmp_path):
    path = tmp_path / "c.flac"
    sf.write(path, _signal(16000, 1, 1.0), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    for k in range(200, len(data)):
        data[k] = (data[k] * 7 + 3) % 256
    path.write_bytes(bytes(data))
    audio.probe(path)  # the header still reads
    with pytest.raises(AudioError) as e:
        audio.load(path)
    assert "\n" not in str(e.value)


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without mp3")
def test_mp3(tmp_path):
    path = tmp_path / "a.mp3"
    sf.write(path, _signal(44100, 2), 44100, format="MP3", subtype="MPEG_LAYER_III")
    wave, info = audio.load(path)
    assert info.sample_rate == 44100 and info.channels == 2
    np.testing.assert_allclose(wave, _reference(path), atol=1e-6)


def test_extension_check_is_case_insensitive():
    assert audio.is_audio_path("a/B.WAV") and audio.is_audio_path("x.Flac")
    assert not audio.is_audio_path("x.txt")
