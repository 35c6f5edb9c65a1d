"""Audio in: decode with soundfile, mix to mono, resample to 16 kHz with soxr, check, normalise.

Every model of the family consumes 16 kHz mono float32 waveforms. The steps,
in order, for one input:

1. decode with ``soundfile`` as float32 (wav, flac, ogg/vorbis, opus, and mp3
   where the installed libsndfile reads it); integer PCM is scaled to [-1, 1]
   by soundfile itself. Only regular files are opened (a FIFO or a device is
   an error, never read), the rate must lie within :data:`MIN_SAMPLE_RATE` and
   :data:`MAX_SAMPLE_RATE`, and a file is decoded block by block, so neither
   the file's own multichannel audio nor a length its header claims is ever
   held whole: memory follows the 16 kHz mono result, and for a file longer
   than the caller's ``max_whole`` not even that (see :mod:`w2v.pipeline.long_audio`);
2. multichannel audio is averaged to mono, or one channel is picked
   (``channel=N``, 0-based; ``--channel N`` on the command line; mono files
   are used as they are, a file with fewer than N + 1 channels is an error);
3. samples must all be finite (NaN or Inf is an error, checked before
   resampling, which would smear it);
4. resampled to 16 kHz with soxr at quality ``"HQ"`` (:data:`RESAMPLE_QUALITY`);
5. the result must hold at least ``min_samples`` samples, which the caller takes from
   the model (``config.receptive_field``: one frame, 400 samples = 25 ms for every
   released checkpoint);
6. when the checkpoint asks for it (``model.normalize``), normalised per
   utterance over its own samples, before any padding:
   ``(x - mean) / sqrt(var + 1e-7)`` with the population variance.

Long files: :func:`load` given ``max_whole`` stops once it has decoded more than that
many samples at 16 kHz and hands back the pass in progress (:class:`Overlong`);
:mod:`w2v.pipeline.long_audio` finishes it without ever holding the file whole.

Problems with one input raise :class:`AudioError` whose message is one line.
File names are given to libsndfile as bytes, so a name that is not valid
UTF-8 reads like any other.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v.config import SAMPLE_RATE
from w2v.errors import AudioError, one_line

RESAMPLE_QUALITY = "HQ"
"""soxr quality recipe used for every resampling."""

MIN_SAMPLE_RATE = 1000
"""Lowest sample rate (Hz) accepted. Below it a file is an error: no speech survives at such a
rate, and resampling a few kilobytes "at 1 Hz" to 16 kHz would take gigabytes."""

MAX_SAMPLE_RATE = 1_000_000
"""Highest sample rate (Hz) accepted (1 MHz, above any audio interface or ultrasound recorder)."""

MAX_AUDIO_SECONDS = 12 * 3600.0
"""Longest input accepted, in seconds (12 hours: 2.8 GB as 16 kHz float32). Checked against
the header before decoding and against the samples while decoding, as headers can lie."""

DECODE_BLOCK = 1 << 16
"""Frames decoded (and resampled) at a time."""

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
        info = sf.info(os.fsencode(p))
    except Exception as e:  # noqa: BLE001 - libsndfile reports every failure differently
        raise AudioError(f"cannot read audio header: {_reason(e)}") from None
    return _checked_info(int(info.samplerate), int(info.channels), int(info.frames))


def _checked_info(rate: int, channels: int, frames: int) -> AudioInfo:
    """The header's numbers as an :class:`AudioInfo`, or AudioError for a rate out of
    bounds or a length past :data:`MAX_AUDIO_SECONDS` (before anything is allocated)."""
    if frames < 0 or rate <= 0 or channels <= 0:
        raise AudioError("cannot read audio header: length, rate or channels unknown")
    check_rate(rate)
    info = AudioInfo(sample_rate=rate, channels=channels, frames=frames)
    if info.duration > MAX_AUDIO_SECONDS:
        raise AudioError(_too_long(info.duration))
    return info


def check_rate(rate: int) -> None:
    """AudioError unless :data:`MIN_SAMPLE_RATE` <= ``rate`` <= :data:`MAX_SAMPLE_RATE`."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"sample rate {rate} Hz is outside the accepted {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )


def _too_long(seconds: float) -> str:
    return (
        f"audio is {seconds / 3600:.1f} h long; the limit is {MAX_AUDIO_SECONDS / 3600:g} h "
        "per input (split the file)"
    )


def decode(path: str | os.PathLike, channel: int | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Decode ``path`` to a mono float32 waveform at the file's own rate.

    Returns ``(samples,)`` float32 and the :class:`AudioInfo` of what was read.
    ``channel=None`` averages all channels; an int picks that channel (0-based).
    """
    info, blocks = _decode_blocks(path, channel)
    wave = _joined(list(blocks))
    return wave, AudioInfo(info.sample_rate, info.channels, int(wave.shape[0]))


def _decode_blocks(
    path: str | os.PathLike, channel: int | None
) -> tuple[AudioInfo, Iterator[np.ndarray]]:
    """The header's :class:`AudioInfo` (checked) and an iterator of mono float32 blocks of
    at most :data:`DECODE_BLOCK` samples each, all finite, stopping with AudioError past
    :data:`MAX_AUDIO_SECONDS` whatever the header said."""
    import soundfile as sf

    p = Path(path)
    _check_file(p)
    try:
        f = sf.SoundFile(os.fsencode(p))
    except Exception as e:  # noqa: BLE001 - libsndfile reports every failure differently
        raise AudioError(f"cannot decode audio: {_reason(e)}") from None
    try:
        info = _checked_info(int(f.samplerate), int(f.channels), int(f.frames))
    except BaseException:
        f.close()
        raise
    limit = int(MAX_AUDIO_SECONDS * info.sample_rate)

    def blocks() -> Iterator[np.ndarray]:
        read = 0
        with f:
            while True:
                try:
                    data = f.read(DECODE_BLOCK, dtype="float32", always_2d=True)
                except Exception as e:  # noqa: BLE001
                    raise AudioError(f"cannot decode audio: {_reason(e)}") from None
                if data.shape[0] == 0:
                    return
                read += data.shape[0]
                if read > limit:
                    raise AudioError(_too_long(read / info.sample_rate))
                mono = to_mono(data, channel)
                _check_finite(mono)
                yield mono

    return info, blocks()


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


def _resampled(blocks: Iterator[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``rate`` → non-empty float32 blocks at 16 kHz, resampled as a
    stream (together, the same samples soxr gives for the whole array at once)."""
    if rate == SAMPLE_RATE:
        yield from (b for b in blocks if b.shape[0])
        return
    import soxr

    stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    for b in blocks:
        out = stream.resample_chunk(b)
        if out.shape[0]:
            yield out
    out = stream.resample_chunk(np.zeros(0, np.float32), last=True)
    if out.shape[0]:
        yield out


class Decoding:
    """One pass over a file: its header (checked, as :func:`probe` checks it), its mono
    float32 blocks at 16 kHz (``blocks``, an iterator: decoding goes as far as it is read),
    and the frames decoded so far at the file's own rate."""

    def __init__(self, path: Path, channel: int | None) -> None:
        self.path, self.channel = path, channel
        self.header, decoded = _decode_blocks(path, channel)
        self.frames = 0
        self.blocks = _resampled(self._counted(decoded), self.header.sample_rate)

    def _counted(self, decoded: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for block in decoded:
            self.frames += block.shape[0]
            yield block

    def read(self) -> AudioInfo:
        """The :class:`AudioInfo` of what this pass has decoded so far."""
        return AudioInfo(self.header.sample_rate, self.header.channels, self.frames)


@dataclass
class Overlong:
    """What :func:`load` gives in place of the samples past ``max_whole``: its pass, stopped
    there, for :func:`w2v.pipeline.long_audio.load` to finish."""

    decoding: Decoding
    kept: list[np.ndarray]
    """The 16 kHz blocks decoded so far; the rest are still to come from ``decoding.blocks``."""


def _joined(blocks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole (unpadded) utterance: ``(x - m) / sqrt(v + 1e-7)``."""
    w = wave.astype(np.float64)
    mean = w.mean()
    var = w.var()  # population variance, as HF's feature extractor
    return normalize_with(w, mean, var)


def normalize_with(w: np.ndarray, mean: np.float64, var: np.float64) -> np.ndarray:
    """float64 samples → float32 ``(w - mean) / sqrt(var + eps)``: elementwise, so a block
    gives the same samples as its stretch of the whole array."""
    return ((w - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)


def prepare(
    wave: np.ndarray, rate: int, *, normalize_input: bool = False, min_samples: int = 0
) -> np.ndarray:
    """A mono waveform at any rate → checked float32 ``(samples,)`` at 16 kHz, ready for batching.

    ``min_samples``: the shortest length the model accepts at 16 kHz (its
    ``config.receptive_field``); 0 checks only that the input is not empty.
    Raises :class:`AudioError` on empty input, non-finite samples, or fewer than
    ``min_samples`` samples after resampling.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError(f"expected a mono waveform of shape (samples,), got shape {wave.shape}")
    if wave.size == 0:
        raise AudioError("zero-length audio")
    _check_finite(wave)
    check_rate(int(rate))
    if wave.shape[0] / rate > MAX_AUDIO_SECONDS:
        raise AudioError(_too_long(wave.shape[0] / rate))
    return _finish(resample(wave, int(rate)), normalize_input, min_samples)


def _check_finite(wave: np.ndarray) -> None:
    # before resampling, which would smear a NaN over its neighbours
    if not np.isfinite(wave).all():
        bad = int(np.count_nonzero(~np.isfinite(wave)))
        raise AudioError(f"audio holds {bad} NaN or Inf sample(s)")


def check_length(samples: int, min_samples: int) -> None:
    """AudioError when ``samples`` at 16 kHz are fewer than the model's ``min_samples``."""
    if samples < min_samples:
        raise AudioError(
            f"audio too short: {samples} samples at 16 kHz "
            f"({samples / SAMPLE_RATE * 1000:.1f} ms); the model needs at least "
            f"{min_samples} ({min_samples / SAMPLE_RATE * 1000:.0f} ms)"
        )


def _finish(wave: np.ndarray, normalize_input: bool, min_samples: int) -> np.ndarray:
    """The checks and normalisation after resampling (steps 5 and 6)."""
    check_length(wave.shape[0], min_samples)
    if normalize_input:
        wave = normalize(wave)
    return np.ascontiguousarray(wave, dtype=np.float32)


def load(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    normalize_input: bool = False,
    min_samples: int = 0,
    max_whole: int | None = None,
) -> tuple[np.ndarray | Overlong, AudioInfo]:
    """Decode, mix down, resample, check and (optionally) normalise one file (see
    :func:`prepare` for ``min_samples``).

    Returns ``(samples,)`` float32 at 16 kHz and the file's :class:`AudioInfo` (of what
    was read). Past ``max_whole`` samples at 16 kHz it stops and gives an
    :class:`Overlong` in place of the samples, and the AudioInfo of what was read so far
    (see *Long files* above; :func:`w2v.pipeline.long_audio.load` finishes it); None: any
    length is returned whole.
    """
    first = Decoding(Path(path), channel)
    kept: list[np.ndarray] = []
    held = 0
    for block in first.blocks:
        kept.append(block)
        held += block.shape[0]
        if max_whole is not None and held > max_whole:
            return Overlong(first, kept), first.read()
    if first.frames == 0:
        raise AudioError("zero-length audio")
    return _finish(_joined(kept), normalize_input, min_samples), first.read()


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_file(p: Path) -> None:
    """AudioError unless ``p`` is a non-empty regular file (after symlinks). Nothing else is
    opened: reading a FIFO would block and a device such as ``/dev/zero`` never ends."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError("no such file") from None
    except OSError as e:
        raise AudioError(f"cannot access file: {_reason(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "special file")
        raise AudioError(f"not a regular file ({kind}); give an audio file")
    if st.st_size == 0:
        raise AudioError("file is empty (0 bytes)")


def _reason(e: BaseException) -> str:
    """One line from an exception, without the file name libsndfile repeats."""
    text = one_line(e)
    if text.startswith("Error opening '") and "': " in text:
        text = text.split("': ", 1)[1]
    return text
