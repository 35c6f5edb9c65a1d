"""The embedding pipeline behind ``w2v embed`` (:func:`embed_files`) and ``w2v.embed`` (:func:`embed`).

Data flows one way, one module per step:

* :mod:`~w2v.pipeline.inputs`: paths (files, directories, list files) → audio files and
  their output keys;
* :mod:`~w2v.pipeline.audio`: headers, decoding, mono, 16 kHz, checks, normalisation;
* :mod:`~w2v.pipeline.long_audio`: files too long to hold whole, measured then read again;
* :mod:`~w2v.pipeline.batching`: batches of similar length, decoded ahead on threads;
* :mod:`~w2v.pipeline.options`: the run's numeric options (seconds, workers, channel), checked once;
* :mod:`~w2v.pipeline.layers`: layer specs (``"0,6,12"``, ``"4-8"``, ``"-1"``);
* :mod:`~w2v.pipeline.stream`: the model on each batch, item-by-item fallback, long inputs;
* :mod:`~w2v.pipeline.pooling`: mean / stats / frames over valid frames only;
* :mod:`~w2v.pipeline.outputs`: output files, the manifest and its schema, resume;
* :mod:`~w2v.pipeline.parquet`: ``--format parquet``, many inputs' rows per file;
* :mod:`~w2v.pipeline.shards`: which shard a process is (flags, torchrun, SLURM) and which
  whole batches of the run's plan it computes;
* :mod:`~w2v.pipeline.merge`: shard manifests and ``w2v merge``;
* :mod:`~w2v.pipeline.ray_data`: the Ray Data callable :class:`EmbedBatch` and
  ``--engine ray``;
* :mod:`~w2v.pipeline.head`: ``--head``: a fine-tuned head's outputs for each input;
* :mod:`~w2v.pipeline.files`: :func:`embed_files` (``w2v embed``), progress, summary;
* :mod:`~w2v.pipeline.in_memory`: :func:`embed` (``w2v.embed``), paths or arrays in, arrays
  out (:class:`Embeddings`), per-item errors raised or skipped.

Conventions all of them share:

* Layers: index 0 is the transformer input, k the output of layer k (before
  any final LayerNorm), negatives count from the end (-1 is the last layer).
  No layer past the deepest one asked for is computed.
* Frames: frame t covers input samples ``[320 t, 320 t + 400)`` at 16 kHz, a
  25 ms window every 20 ms; an input of S samples gives
  ``floor((S - 400) / 320) + 1`` frames.
* Results are float32 arrays of shape ``(layers, dim)`` pooled
  (``(layers, 2 * dim)`` for ``stats``) or ``(layers, frames, dim)`` unpooled,
  layers in the order asked.
* Batching: items are sorted by duration (longest first) and cut into batches
  whose padded size stays within ``batch_seconds`` of audio; the model computes
  batched items exactly as it would alone, so results do not depend on batching.
"""

from w2v.pipeline.files import Progress, Summary, embed_files
from w2v.pipeline.in_memory import Embeddings, embed
from w2v.pipeline.inputs import LIST_EXTENSIONS, Input, collect_inputs, expand
from w2v.pipeline.layers import LayerSpec, parse_layers, resolve_layers
from w2v.pipeline.merge import merge_shards
from w2v.pipeline.ray_data import EmbedBatch

__all__ = [
    "LIST_EXTENSIONS",
    "EmbedBatch",
    "Embeddings",
    "Input",
    "LayerSpec",
    "Progress",
    "Summary",
    "collect_inputs",
    "embed",
    "embed_files",
    "expand",
    "merge_shards",
    "parse_layers",
    "resolve_layers",
]
