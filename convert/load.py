"""Find out what kind of checkpoint a path is and read it into a :class:`Checkpoint`."""

from __future__ import annotations

import os
from pathlib import Path

from w2v.convert import checkpoint
from w2v.convert.checkpoint import Checkpoint
from w2v.convert.fairseq_file import read_fairseq
from w2v.convert.hf_dir import read_hf

from w2v.errors import CheckpointError


def read_checkpoint(path: str | os.PathLike, *, strict: bool = False) -> Checkpoint:
    """Read a w2v directory, a Hugging Face model directory, or a fairseq ``.pt`` file.

    A task head w2v runs is kept (``Checkpoint.head``); other weights outside the backbone
    are kept unused (``Checkpoint.extra``) with a notice, or refused when ``strict``. Keys
    inside the backbone that are unknown or missing are errors either way. Raises
    :class:`CheckpointError` with a one-line message naming the file.
    """
    p = Path(path)
    if p.is_dir():
        if checkpoint.is_w2v_dir(p):
            return checkpoint.read(p, strict=strict)
        if (p / "config.json").is_file():
            return read_hf(p, strict=strict)
        raise CheckpointError(
            f"{p}: directory holds no config.json; expected a w2v checkpoint directory "
            "(from `w2v convert`) or a Hugging Face model directory"
        )
    if p.is_file():
        return read_fairseq(p, strict=strict)
    raise CheckpointError(f"{p}: no such file or directory")
