"""Checkpoint conversion: Hugging Face and fairseq checkpoints to w2v's own format.

Nothing here imports ``transformers`` or ``fairseq``; every converter is a
pure function from a source state dict and config to a :class:`Checkpoint`.
"""

from w2v.convert.checkpoint import Checkpoint

from w2v.errors import CheckpointError

__all__ = ["Checkpoint", "CheckpointError"]
