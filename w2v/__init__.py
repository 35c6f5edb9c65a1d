"""w2v: pure-PyTorch wav2vec 2.0 family encoders (wav2vec2, XLS-R, HuBERT, data2vec-audio, WavLM)."""

from w2v.config import Config, config_names, num_frames
from w2v.loading import from_config, load

__all__ = ["Config", "config_names", "from_config", "load", "num_frames", "embed"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # the embedding pipeline pulls in audio libraries: import it on first use
    if name == "embed":
        from w2v.embed import embed

        return embed
    raise AttributeError(f"module 'w2v' has no attribute {name!r}")
