"""Audio in: decode with soundfile, mix to mono, resample to 16 kHz with soxr, check, normalise.

Every model of the family consumes 16 kHz mono float32 waveforms. The steps,
in order, for one input:

1. decode with ``soundfile`` as float32 (wav, flac, ogg/vorbis, opus, and mp3
   where the installed libsndfile reads it); integer PCM is scaled to [-1, 1]
   by soundfile itself;
2. multichannel audio is averaged to mono, or one channel is picked
   (``channel=N``, 0-based; ``--channel N`` on the command line; mono files
   are used as they are, a file with fewer than N + 1 channels is an error);
3. samples must all be finite (NaN or Inf is an error, checked before
   resampling, which would smear it);
4. resampled to 16 kHz with soxr at quality ``"HQ"`` (:data:`RESAMPLE_QUALITY`);
5. the result must hold at least 400 samples (one 25 ms frame);
6. when the checkpoint asks for it (``model.normalize``), normalised per
   utterance over its own samples, before any padding:
   ``(x - mean) / sqrt(var + 1e-7)`` with the population variance.

Problems with one input raise :class:`AudioError` whose message is one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v.config import SAMPLE_RATE
from w2v.errors import AudioError, one_line

MIN_SAMPLES = 400
"""Shortest input at 16 kHz: the conv encoder's receptive field (one 25 ms frame)."""

RESAMPLE_QUALITY = "HQ"
"""soxr quality recipe used for every resampling."""

NORM_EPS = 1e-7
"""Variance epsilon of the per-utterance normalisation (as in HF's feature extractor)."""

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
)
"""Extensions (lower case) taken as audio when searching directories."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says: rate, channels and samples per channel (``frames``)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def samples_16k(self) -> int:
        """Approximate length after resampling to 16 kHz (for planning batches)."""
        if not self.sample_rate:
            return 0
        return round(self.frames * SAMPLE_RATE / self.sample_rate)


def is_audio_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read only the header of ``path`` (cheap): rate, channels, length."""
    import soundfile as sf

    p = Path(path)
    _check_file(p)
    try:
        info = sf.info(str(p))
    except Exception as e:  # noqa: BLE001 - libsndfile reports every failure differently
        raise AudioError(f"cannot read audio header: {_reason(e)}") from None
    if info.frames < 0 or info.samplerate <= 0:
        raise AudioError("cannot read audio header: length or sample rate unknown")
    return AudioInfo(
        sample_rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames)
    )


def decode(path: str | os.PathLike, channel: int | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Decode ``path`` to a mono float32 waveform at the file's own rate.

    Returns ``(samples,)`` float32 and the :class:`AudioInfo` of what was read.
    ``channel=None`` averages all channels; an int picks that channel (0-based).
    """
    import soundfile as sf

    p = Path(path)
    _check_file(p)
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as e:  # noqa: BLE001
        raise AudioError(f"cannot decode audio: {_reason(e)}") from None
    info = AudioInfo(sample_rate=int(rate), channels=int(data.shape[1]), frames=int(data.shape[0]))
    return to_mono(data, channel), info


def to_mono(data: np.ndarray, channel: int | None = None) -> np.ndarray:
    """``(samples, channels)`` → ``(samples,)``: the channel mean, or channel ``channel``.

    Mono audio is used as is whatever ``channel`` says, so one setting serves a
    collection that mixes mono and multichannel files.
    """
    if data.ndim == 1:
        return np.ascontiguousarray(data, dtype=np.float32)
    channels = data.shape[1]
    if channel is not None and channels > 1:
        if not -channels <= channel < channels:
            raise AudioError(
                f"channel {channel} asked for, but the audio has {channels} channel(s) "
                f"(valid: 0..{channels - 1})"
            )
        return np.ascontiguousarray(data[:, channel], dtype=np.float32)
    if channels == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 waveform from ``rate`` to ``target`` Hz with soxr (``"HQ"``)."""
    if rate == target:
        return wave
    import soxr

    return soxr.resample(wave, rate, target, quality=RESAMPLE_QUALITY)


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole (unpadded) utterance: ``(x - m) / sqrt(v + 1e-7)``."""
    w = wave.astype(np.float64)
    mean = w.mean()
    var = w.var()  # population variance, as HF's feature extractor
    return ((w - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)


def prepare(
    wave: np.ndarray, rate: int, *, normalize_input: bool = False, min_samples: int = MIN_SAMPLES
) -> np.ndarray:
    """A mono waveform at any rate → checked float32 ``(samples,)`` at 16 kHz, ready for batching.

    Raises :class:`AudioError` on empty input, non-finite samples, or fewer than
    ``min_samples`` samples after resampling.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError(f"expected a mono waveform of shape (samples,), got shape {wave.shape}")
    if wave.size == 0:
        raise AudioError("zero-length audio")
    if not np.isfinite(wave).all():
        bad = int(np.count_nonzero(~np.isfinite(wave)))
        raise AudioError(f"audio holds {bad} NaN or Inf sample(s)")
    if rate <= 0:
        raise AudioError(f"invalid sample rate {rate}")
    wave = resample(wave, int(rate))
    if wave.shape[0] < min_samples:
        raise AudioError(
            f"audio too short: {wave.shape[0]} samples at 16 kHz "
            f"({wave.shape[0] / SAMPLE_RATE * 1000:.1f} ms); the model needs at least "
            f"{min_samples} ({min_samples / SAMPLE_RATE * 1000:.0f} ms)"
        )
    if normalize_input:
        wave = normalize(wave)
    return np.ascontiguousarray(wave, dtype=np.float32)


def load(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    normalize_input: bool = False,
    min_samples: int = MIN_SAMPLES,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode, mix down, resample, check and (optionally) normalise one file.

    Returns ``(samples,)`` float32 at 16 kHz and the file's :class:`AudioInfo`.
    """
    wave, info = decode(path, channel)
    return prepare(
        wave, info.sample_rate, normalize_input=normalize_input, min_samples=min_samples
    ), info


def _check_file(p: Path) -> None:
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise AudioError("no such file") from None
    except OSError as e:
        raise AudioError(f"cannot access file: {_reason(e)}") from None
    if p.is_dir():
        raise AudioError("is a directory, not an audio file")
    if size == 0:
        raise AudioError("file is empty (0 bytes)")


def _reason(e: BaseException) -> str:
    """One line from an exception, without the file name libsndfile repeats."""
    text = one_line(e)
    if text.startswith("Error opening '") and "': " in text:
        text = text.split("': ", 1)[1]
    return text
