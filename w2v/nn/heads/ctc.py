"""Greedy CTC decoding: per-frame logits of a ``*ForCTC`` checkpoint → transcripts.

The best symbol of every valid frame, repeats collapsed, the blank dropped, the word
delimiter read as a space, the ends stripped: what transformers' ``Wav2Vec2CTCTokenizer``
gives for the argmax ids (``batch_decode`` with its defaults, so other special symbols such
as ``<unk>`` stay in the text).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import torch

WORD_DELIMITER = "|"

# symbols a CTC vocabulary names its blank with, in the order they are looked for: an explicit
# CTC blank, then transformers' pad tokens (the CTC loss's blank is ``pad_token_id``)
_BLANKS = ("<ctc_blank>", "<pad>", "[PAD]")


def blank_index(vocab: Sequence[str]) -> int:
    """The index of the CTC blank in ``vocab``.

    A fairseq target dictionary (``<s>``, ``<pad>``, ``</s>``, ``<unk>``, ...) blanks with
    index 0, its ``<s>``: fairseq's CTC trains with ``bos`` as the blank unless the
    dictionary has a ``<ctc_blank>``. Otherwise the first of ``<ctc_blank>``, ``<pad>``,
    ``[PAD]`` present (transformers' vocabularies; the fine-tuning recipe's ``[PAD]``), and
    index 0 when there is none.
    """
    symbols = list(vocab)
    if "<ctc_blank>" not in symbols and symbols[:2] == ["<s>", "<pad>"]:
        return 0
    for name in _BLANKS:
        if name in symbols:
            return symbols.index(name)
    return 0


def greedy_decode(
    logits: torch.Tensor,
    frame_lengths: torch.Tensor | Sequence[int] | None,
    vocab: Sequence[str],
    blank: int | None = None,
    word_delimiter: str = WORD_DELIMITER,
) -> list[str]:
    """Logits (batch, frames, vocab) and valid frames per item (batch,) (None: all valid)
    → one transcript per item. ``blank``: the blank's index, default :func:`blank_index`.
    """
    if logits.dim() != 3 or logits.shape[-1] != len(vocab):
        raise ValueError(
            f"logits must be (batch, frames, {len(vocab)}) for a vocabulary of {len(vocab)} "
            f"symbols, got shape {tuple(logits.shape)}"
        )
    blank = blank_index(vocab) if blank is None else blank
    ids = logits.argmax(dim=-1).tolist()  # (B, T)
    lengths = [len(row) for row in ids] if frame_lengths is None else list(frame_lengths)
    texts = []
    for row, n in zip(ids, lengths, strict=True):
        symbols = (vocab[i] for i, _ in groupby(row[: int(n)]) if i != blank)
        text = "".join(" " if s == word_delimiter else s for s in symbols)
        texts.append(text.strip())
    return texts
