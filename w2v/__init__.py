"""w2v: pure-PyTorch wav2vec 2.0 family encoders (wav2vec2, XLS-R, HuBERT, data2vec-audio, WavLM)."""

from w2v.allocator import release_memory, tune_allocator
from w2v.config import Config, config_names, num_frames
from w2v.loading import from_config, load
from w2v.longform import hidden_states_long, iter_chunks
from w2v.pipeline import embed
from w2v.pipeline.read import read_embeddings

__all__ = [
    "Config",
    "config_names",
    "embed",
    "from_config",
    "hidden_states_long",
    "iter_chunks",
    "load",
    "num_frames",
    "read_embeddings",
    "release_memory",
    "tune_allocator",
]
__version__ = "0.1.0"
