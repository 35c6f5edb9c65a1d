"""Reference representations to compare layers against: log-mel frames on the model's grid.

Frame t of the reference is computed from exactly the samples model frame t covers,
``[hop * t, hop * t + field)`` (320 and 400 at 16 kHz; :class:`~w2v.config.Config`): a
Hann window of ``field`` samples, a ``N_FFT``-point power spectrum, ``N_MELS`` triangular
filters on the HTK mel scale from 0 Hz to 8 kHz, then ``log(x + 1e-10)``. The count of
frames is :func:`~w2v.config.num_frames`, so reference and layer frames pair one to one.
An utterance's reference vector is the mean of its log-mel frames, as ``--pool mean`` is
of a layer's.
"""

from __future__ import annotations

import numpy as np

from w2v.config import SAMPLE_RATE, Config, num_frames

REFERENCES = ("logmel",)
N_MELS = 80
N_FFT = 512


def _mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced in mel from 0 to rate / 2."""
    bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges = _hz(np.linspace(0.0, _mel(np.array(rate / 2)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def logmel_frames(
    wave: np.ndarray, config: Config | None = None, n_mels: int = N_MELS
) -> np.ndarray:
    """(frames, n_mels) float32 log-mel frames of a 16 kHz waveform on the model's frame grid."""
    config = config or Config()
    hop, field = config.hop_length, config.receptive_field
    frames = num_frames(len(wave), config)
    wave = np.asarray(wave, dtype=np.float64)
    if frames == 0:
        return np.zeros((0, n_mels), dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(wave, field)[::hop][:frames]  # (T, field)
    power = np.abs(np.fft.rfft(windows * np.hanning(field), n=max(N_FFT, field))) ** 2
    fb = mel_filterbank(n_mels, max(N_FFT, field))
    return np.log(power @ fb.T + 1e-10).astype(np.float32)
