"""torchaudio's wav2vec2 names (``models``, ``pipelines``) on w2v's modules.

Switching is an import::

    from w2v.compat import torchaudio          # was: import torchaudio
    bundle = torchaudio.pipelines.HUBERT_BASE
    model = torchaudio.models.wav2vec2_base()

torchaudio itself is never imported.
"""

from w2v.compat.torchaudio import models, pipelines

__all__ = ["models", "pipelines"]
