"""torchaudio's ``models`` (the wav2vec2 family): ``from w2v.compat.torchaudio.models import wav2vec2_base``."""

from w2v.compat.torchaudio.models import wav2vec2
from w2v.compat.torchaudio.models.wav2vec2 import (
    Wav2Vec2Model,
    hubert_base,
    hubert_large,
    hubert_xlarge,
    wav2vec2_base,
    wav2vec2_large,
    wav2vec2_large_lv60k,
    wav2vec2_model,
    wav2vec2_xlsr_1b,
    wav2vec2_xlsr_2b,
    wav2vec2_xlsr_300m,
    wavlm_base,
    wavlm_large,
    wavlm_model,
)

__all__ = [
    "Wav2Vec2Model",
    "hubert_base",
    "hubert_large",
    "hubert_xlarge",
    "wav2vec2",
    "wav2vec2_base",
    "wav2vec2_large",
    "wav2vec2_large_lv60k",
    "wav2vec2_model",
    "wav2vec2_xlsr_1b",
    "wav2vec2_xlsr_2b",
    "wav2vec2_xlsr_300m",
    "wavlm_base",
    "wavlm_large",
    "wavlm_model",
]
