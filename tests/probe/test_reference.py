"""Log-mel reference frames sit on the model's frame grid."""

from __future__ import annotations

import numpy as np

from w2v.config import num_frames
from w2v.probe.reference import N_MELS, logmel_frames, mel_filterbank


def test_frame_count_and_grid():
    for samples in (400, 719, 720, 16000):
        assert logmel_frames(np.zeros(samples)).shape == (num_frames(samples), N_MELS)
    # a burst in exactly frame 2's samples [640, 1040): frames 1 and 3 overlap it, the rest
    # see silence
    wave = np.zeros(3200)
    wave[640:1040] = np.sin(np.arange(400) * 0.7)
    mel = logmel_frames(wave)
    silent = np.log(1e-10)
    loud = mel.max(axis=1)
    assert np.all(loud[[0, 4, 5, 6, 7, 8]] == np.float32(silent))
    assert np.all(loud[[1, 2, 3]] > silent + 10)
    assert loud[2] > loud[1] and loud[2] > loud[3]


def test_filterbank_peaks_follow_the_tone():
    fb = mel_filterbank()
    assert fb.shape == (N_MELS, 257) and fb.min() >= 0 and fb.max() <= 1
    t = np.arange(4000) / 16000
    low = logmel_frames(np.sin(2 * np.pi * 300 * t)).mean(axis=0).argmax()
    high = logmel_frames(np.sin(2 * np.pi * 3000 * t)).mean(axis=0).argmax()
    assert low < high
