"""Long files: measured in a first pass, then decoded again window by window, never held whole.

A file longer than the longest input computed whole (``max_whole`` samples at 16 kHz; the
windowed inputs of :mod:`w2v.longform` are longer) is read in passes, each one block by
block through :mod:`w2v.pipeline.audio`, so memory is a block or two whatever its length:

1. *measure and check*: :func:`load` decodes the file as :func:`w2v.pipeline.audio.load`
   does, keeping samples only up to ``max_whole``. Past it the pass only counts the samples
   (the length check, :data:`~w2v.pipeline.audio.MAX_AUDIO_SECONDS`, NaN/Inf, and the
   model's minimum all apply as for any file) and, for ``normalize_input``, sums them for the
   mean. The variance needs that mean, so it costs a second pass; a header that misstated
   the length costs one more, for the mean (the sum's split depends on the length, below).
   The result is a :class:`LongAudio`: the length and float64 mean and variance;
2. *windows*: :meth:`LongAudio.blocks` decodes the file once more, normalising each block
   with those statistics, as the windows of :func:`w2v.longform.iter_chunks_stream` need it.
   A file that no longer has the measured length is an :class:`~w2v.errors.AudioError`.

The statistics are numpy's own to the last bit, not merely close: numpy sums a float64
array pairwise, in an order that depends only on its length, and :class:`StreamingSum`
follows that order from consecutive pieces. Normalisation is elementwise, so the blocks
equal, sample for sample, :func:`w2v.pipeline.audio.normalize` on the whole array, and a
long file embeds exactly as it would if it were held whole.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v.errors import AudioError
from w2v.pipeline import audio

SUM_SPAN = 1 << 18
"""Values (float64, 2 MB) a :class:`StreamingSum` holds before summing them."""


class StreamingSum:
    """numpy's float64 ``sum`` of ``n`` values fed in consecutive pieces, to the last bit.

    numpy sums a contiguous array pairwise: it splits it in two at half its length
    (rounded down to a multiple of 8) and sums each half the same way, down to
    stretches of 128. So every part of that split sums exactly as numpy sums that
    slice alone: the parts of at most :data:`SUM_SPAN` values are summed by numpy as
    they fill, and the few above them are added in numpy's order at the end. The
    split depends on ``n``, so it is known in advance; :meth:`result` is None when the
    values fed do not number ``n``.
    """

    def __init__(self, n: int) -> None:
        self.n, self.fed = n, 0
        self._tree = self._split(n)
        self._spans = iter(self._leaves(self._tree))
        self._next = next(self._spans, 0)
        self._held: list[np.ndarray] = []
        self._held_len = 0
        self._sums: list[np.float64] = []

    @classmethod
    def _split(cls, n: int) -> int | tuple:
        if n <= SUM_SPAN:
            return n
        half = n // 2
        half -= half % 8
        return (cls._split(half), cls._split(n - half))

    @classmethod
    def _leaves(cls, tree: int | tuple) -> Iterator[int]:
        if isinstance(tree, int):
            yield tree
        else:
            for part in tree:
                yield from cls._leaves(part)

    def add(self, values: np.ndarray) -> None:
        """Feed the next ``(k,)`` float64 values."""
        self.fed += values.shape[0]
        if self.fed > self.n:
            self._held = []  # the result is None anyway
            return
        self._held.append(values)
        self._held_len += values.shape[0]
        while self._next and self._held_len >= self._next:
            held = np.concatenate(self._held)
            self._sums.append(np.add.reduce(held[: self._next]))
            rest = held[self._next :]
            self._held, self._held_len = [rest], rest.shape[0]
            self._next = next(self._spans, 0)

    def result(self) -> np.float64 | None:
        """The sum, or None when other than ``n`` values were fed."""
        if self.fed != self.n:
            return None
        sums = iter(self._sums or [np.float64(0.0)])

        def combine(tree: int | tuple) -> np.float64:
            if isinstance(tree, int):
                return next(sums)
            left = combine(tree[0])
            return left + combine(tree[1])

        return combine(self._tree)


@dataclass(frozen=True)
class LongAudio:
    """A file longer than the caller holds whole (see :func:`load`): what the first pass over
    it found, and :meth:`blocks` to read it again."""

    path: Path
    channel: int | None
    samples: int
    """Length at 16 kHz."""
    mean: np.float64 | None = None
    """Per-utterance mean and variance (float64, as :func:`~w2v.pipeline.audio.normalize`
    computes them); None: not normalised."""
    var: np.float64 | None = None

    def blocks(self) -> Iterator[np.ndarray]:
        """The file again as consecutive float32 ``(k,)`` blocks at 16 kHz, normalised when
        the statistics are set. AudioError when the file no longer has ``samples`` samples."""
        for block in _read_again(self.path, self.channel, self.samples):
            if self.mean is not None:
                block = audio.normalize_with(block.astype(np.float64), self.mean, self.var)
            yield block


def load(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    normalize_input: bool = False,
    min_samples: int = 0,
    max_whole: int | None = None,
) -> tuple[np.ndarray | LongAudio, audio.AudioInfo]:
    """:func:`w2v.pipeline.audio.load`, except that a file longer than ``max_whole`` samples at
    16 kHz gives a :class:`LongAudio` in place of the samples (None: any length is returned
    whole). The :class:`~w2v.pipeline.audio.AudioInfo` is of the whole file either way."""
    wave, info = audio.load(
        path,
        channel=channel,
        normalize_input=normalize_input,
        min_samples=min_samples,
        max_whole=max_whole,
    )
    if not isinstance(wave, audio.Overlong):
        return wave, info
    first = wave.decoding
    rest = _drained(wave.kept, first.blocks)
    long = _measured(
        first.path, first.channel, rest, first.header.samples_16k, normalize_input, min_samples
    )
    return long, first.read()  # the pass is over: the frames of the whole file


def _drained(kept: list[np.ndarray], rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``kept`` then ``rest``, each kept block let go once it is passed on."""
    while kept:
        yield kept.pop(0)
    yield from rest


def _measured(
    path: Path,
    channel: int | None,
    blocks: Iterator[np.ndarray],
    expected: int,
    normalize_input: bool,
    min_samples: int,
) -> LongAudio:
    """The rest of a first pass (``blocks``, at 16 kHz) → a :class:`LongAudio`. The sum for the
    mean is taken on the way, split for the ``expected`` length (the header's); only when
    that was wrong is the file read again for it. The variance needs the mean: one more pass."""
    total = StreamingSum(expected) if normalize_input else None
    n = 0
    for block in blocks:
        n += block.shape[0]
        if total is not None:
            total.add(block.astype(np.float64))
    audio.check_length(n, min_samples)
    if total is None:
        return LongAudio(path, channel, n)
    s = total.result()
    if s is None:
        s = _sum_of(_read_again(path, channel, n), n, lambda w: w)
    mean = np.float64(s / n)  # as numpy's mean and var divide
    var = np.float64(_sum_of(_read_again(path, channel, n), n, lambda w: np.square(w - mean)) / n)
    return LongAudio(path, channel, n, mean, var)


def _sum_of(
    blocks: Iterator[np.ndarray], n: int, f: Callable[[np.ndarray], np.ndarray]
) -> np.float64:
    """numpy's sum of ``f(w)`` over all ``n`` samples, ``w`` each block as float64."""
    total = StreamingSum(n)
    for block in blocks:
        total.add(f(block.astype(np.float64)))
    return total.result()


def _read_again(path: Path, channel: int | None, samples: int) -> Iterator[np.ndarray]:
    """The blocks at 16 kHz of a file read before, whose first pass gave ``samples``; AudioError
    when this pass gives another number (the file was changed in between)."""
    n = 0
    for block in audio.Decoding(path, channel).blocks:
        n += block.shape[0]
        if n > samples:
            break
        yield block
    if n != samples:
        raise AudioError(f"the file changed while it was read (it had {samples} samples at 16 kHz)")
