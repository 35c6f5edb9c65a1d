"""Reading a ``w2v embed`` output directory back: :func:`read_embeddings`.

The manifest (:func:`~w2v.pipeline.outputs.read_manifest`) gives the inputs in order and
the file each one's arrays went to; one small reader per output format turns a file into
one array per layer. Pooled outputs come back as one ``(items, dim)`` array per layer.
Frame outputs (``--pool none``) come back as a :class:`FrameLayer` per layer: a sequence
of ``(frames, dim)`` arrays read from disk on demand (``.npy`` memory-mapped, safetensors
one tensor at a time), so a corpus larger than memory can be read item by item.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from w2v.errors import UsageError, one_line, shown
from w2v.pipeline.layers import LayerSpec, parse_layers
from w2v.pipeline.outputs import MANIFEST, read_manifest, read_output
from w2v.pipeline.parquet import entry_layers

# Per-format readers ------------------------------------------------------------------
# Each reads one manifest entry's output (``entry["output"]`` under ``root``) and returns the
# arrays of the layers at ``positions`` (their places in the entry's layer list), as views
# of a memory map where the format allows.

Reader = Callable[[Path, dict[str, Any], Sequence[int], bool], list[np.ndarray]]


def _read_npy(
    root: Path, entry: dict[str, Any], positions: Sequence[int], mmap: bool
) -> list[np.ndarray]:
    path = root / entry["output"]
    if not mmap:
        array = read_output(path)
        return [array[p] for p in positions]
    array = np.load(path, mmap_mode="r", allow_pickle=False)  # (layers, ...) on disk
    return [array[p] for p in positions]


def _read_safetensors(
    root: Path, entry: dict[str, Any], positions: Sequence[int], mmap: bool
) -> list[np.ndarray]:
    from safetensors import safe_open

    with safe_open(str(root / entry["output"]), framework="numpy") as f:
        meta = f.metadata() or {}
        names = [str(i) for i in json.loads(meta["layers"])] if "layers" in meta else list(f.keys())
        return [f.get_tensor(names[p]) for p in positions]


READERS: dict[str, Reader] = {
    "npy": _read_npy,
    "safetensors": _read_safetensors,
}
"""Output format (the manifest's ``format`` setting) → the reader of one output file."""


def _reader(fmt: Any, out_dir: Path) -> Reader:
    if fmt not in READERS:
        raise UsageError(
            f"{shown(str(out_dir / MANIFEST))}: output format {shown(fmt, 40)} cannot be read "
            f"(readable: {', '.join(READERS)})"
        )
    return READERS[fmt]


# The result --------------------------------------------------------------------------


class FrameLayer(Sequence):
    """One layer's frames of every item: ``layer[i]`` is item i's ``(frames, dim)`` float32
    array, read when asked for (``.npy``: a read-only memory map). ``lengths[i]`` is item
    i's frame count, known without reading (the manifest's ``frames``)."""

    def __init__(
        self,
        root: Path,
        entries: Sequence[dict[str, Any]],
        position: int,
        lengths: Sequence[int],
        read: Reader,
    ) -> None:
        self.root = root
        self.entries = list(entries)
        self.position = position
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._read = read

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._read(self.root, self.entries[i], [self.position], True)[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())


@dataclass(frozen=True)
class EmbeddingSet:
    """What :func:`read_embeddings` returns.

    * ``paths``: the input file of each item, in manifest order (items whose entry failed
      are left out; ``errors`` lists them);
    * ``layers``: the layer indices read, in the order asked;
    * ``arrays``: layer index → ``(items, dim)`` float32 array (pooled outputs) or a
      :class:`FrameLayer` (``pool == "none"``);
    * ``pool``: the directory's pooling (``"mean"``, ``"stats"``, ``"none"``);
    * ``frames``: model frames of each item;
    * ``errors``: ``(path, reason)`` of every failed entry; ``skipped`` counts them.

    Unpacks as ``paths, layers, arrays = read_embeddings(DIR)``.
    """

    paths: list[str]
    layers: list[int]
    arrays: dict[int, Any]
    pool: str
    frames: list[int] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return len(self.errors)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.paths, self.layers, self.arrays))


def read_embeddings(out_dir: str | os.PathLike, layers: LayerSpec = None) -> EmbeddingSet:
    """Join ``out_dir/manifest.jsonl`` with its output files (see :mod:`w2v.pipeline.outputs`).

    ``layers``: a spec as for ``w2v embed`` (``"0,6,12"``, ``"4-8"``, ``-1``, a list) naming
    layers the directory holds, or None for all of them; negative indices count from the
    deepest layer stored. Entries with status ``error`` are skipped and counted
    (:attr:`EmbeddingSet.errors`). Raises :class:`UsageError` when there is no manifest, it
    holds no successful entry, an asked layer is not stored, or an output file is missing
    or unreadable (naming it).
    """
    root = Path(out_dir)
    if not (root / MANIFEST).is_file():
        raise UsageError(
            f"{shown(str(root))} holds no {MANIFEST}: give a directory written by w2v embed"
        )
    entries = list(read_manifest(root).values())
    ok = [e for e in entries if e.get("status") == "ok" and e.get("output")]
    errors = [
        (e["path"], str(e.get("error") or "failed"))
        for e in entries
        if not (e.get("status") == "ok" and e.get("output"))
    ]
    if not ok:
        raise UsageError(f"{shown(str(root / MANIFEST))} lists no successful output")
    first = ok[0]
    stored = [int(i) for i in first.get("layers") or []]
    pool, fmt = first.get("pool"), first.get("format")
    if not stored or not all(e.get("layers") == first.get("layers") for e in ok):
        raise UsageError(f"{shown(str(root / MANIFEST))}: entries disagree on their layers")
    read = None if fmt == "parquet" else _reader(fmt, root)
    wanted = _select(layers, stored, root)
    positions = [stored.index(i) for i in wanted]
    frames = [int(e.get("frames") or 0) for e in ok]
    if fmt == "parquet":  # many inputs per file: their rows, memory-mapped (w2v.pipeline.parquet)
        try:
            arrays: dict[int, Any] = entry_layers(root, ok, wanted, str(pool))
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"cannot read {shown(str(root))}: {one_line(e, 200)}") from None
    elif pool == "none":
        arrays = {
            layer: FrameLayer(root, ok, p, frames, read)
            for layer, p in zip(wanted, positions, strict=True)
        }
    else:
        arrays = dict(zip(wanted, _stack(root, ok, positions, read), strict=True))
    settings = {k: first.get(k) for k in ("layers", "pool", "format", "model", "dtype", "channel")}
    return EmbeddingSet(
        paths=[e["path"] for e in ok],
        layers=wanted,
        arrays=arrays,
        pool=str(pool),
        frames=frames,
        errors=errors,
        settings=settings,
    )


def _select(spec: LayerSpec, stored: list[int], root: Path) -> list[int]:
    """The stored layers ``spec`` names: an index must be stored; a range takes the stored
    layers inside it (at least one)."""
    parsed = parse_layers(spec)
    if parsed is None:
        return list(stored)
    deepest = max(stored)
    out: list[int] = []
    for item in parsed:
        lo, hi = item if isinstance(item, tuple) else (item, item)
        lo, hi = (deepest + 1 + i if i < 0 else i for i in (lo, hi))
        found = [i for i in stored if lo <= i <= hi]
        if not found or (not isinstance(item, tuple) and lo not in stored):
            what = f"layer {lo} is not" if lo == hi else f"no layer of {lo}-{hi} is"
            raise UsageError(
                f"{what} in {shown(str(root))} (stored: {', '.join(map(str, stored))})"
            )
        out.extend(i for i in found if i not in out)
    return out


def _stack(
    root: Path, entries: list[dict[str, Any]], positions: list[int], read: Reader
) -> list[np.ndarray]:
    """Pooled outputs: one ``(items, dim)`` float32 array per position, filled entry by entry."""
    out: list[np.ndarray] | None = None
    for i, entry in enumerate(entries):
        path = root / entry["output"]
        try:
            arrays = read(root, entry, positions, False)
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"cannot read {shown(str(path))}: {one_line(e, 200)}") from None
        if out is None:
            out = [np.empty((len(entries), *a.shape), dtype=np.float32) for a in arrays]
        for dest, a in zip(out, arrays, strict=True):
            if a.shape != dest.shape[1:]:
                raise UsageError(
                    f"{shown(str(path))} holds shape {a.shape}, the first output {dest.shape[1:]}"
                )
            dest[i] = a
    return out or []
