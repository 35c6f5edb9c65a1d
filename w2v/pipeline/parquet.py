"""``--format parquet``: many inputs per file, one row each, for corpora of millions of inputs.

Layout: ``DIR/parquet/part-00000.parquet``, ``part-00001.parquet``, ... (a shard writes
``shard-00003-of-00016.part-00000.parquet``), each holding whole rows of a bounded size
(:data:`PART_BYTES` of arrays at most, unless one row is larger). The folder holds parquet
files only, so ``pandas.read_parquet("DIR/parquet")``, ``pyarrow.dataset``, DuckDB
(``'DIR/parquet/*.parquet'``), polars and Hugging Face ``datasets`` read it without w2v.

Columns, one row per input:

* ``path``: the input's output key, its path relative to the directory it was found under
  (as ``sub/a.flac`` in the per-file formats' names);
* ``duration`` (float64 seconds, from the header) and ``frames`` (int64 model frames);
* ``layer_K`` for each layer K asked for, in order: pooled, a fixed-size list of ``dim``
  values (``2 * dim`` for ``stats``); with ``--pool none``, a list of frames, each a
  fixed-size list of ``dim`` values. Values are float32, or float16 with ``--dtype-out``.

The schema metadata key ``w2v`` holds the run's settings (JSON).

Atomicity: rows are held in memory until a part is full (or the run ends), then the part
is written to a temporary name and renamed (:mod:`w2v.atomic`), and only then are the
manifest entries of its rows appended, each naming the part as its ``output``. A killed
run leaves whole parts and a manifest that lists exactly what they hold; the rows it held
in memory are computed again on the next run. Parts are never rewritten: a resumed run
writes new ones, numbered after the last.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from w2v.atomic import atomic_write

PARQUET_DIR = "parquet"
"""The folder under DIR holding the parquet files (and nothing else but temporaries)."""

PART_BYTES = 256 << 20
"""Array bytes a part holds at most (256 MiB) before it is written: large enough for fast
sequential reads, small enough for the rows held meanwhile to fit in memory."""

METADATA_KEY = b"w2v"
"""Schema metadata key holding the run's settings as JSON."""


def layer_column(layer: int) -> str:
    """``layer_12``: the column holding layer ``layer``."""
    return f"layer_{layer}"


def part_name(prefix: str, number: int) -> str:
    """``parquet/part-00007.parquet`` (``prefix`` ``""``), or with a shard's ``prefix``
    (``"shard-00003-of-00016."``) ``parquet/shard-00003-of-00016.part-00007.parquet``:
    relative to DIR, as the manifest's ``output``."""
    return f"{PARQUET_DIR}/{prefix}part-{number:05d}.parquet"


def next_part_number(out_dir: str | os.PathLike, prefix: str, named: Iterable[Any] = ()) -> int:
    """One past the highest part number of ``prefix`` in ``DIR/parquet`` or among ``named``
    (the manifest's outputs; 0 if none): a resumed run never writes a part under a name an
    earlier run's manifest lists, even one deleted since (:func:`drop_partial_parts`)."""
    pattern = re.compile(re.escape(prefix) + r"part-(\d{5,})\.parquet")
    folder = Path(out_dir) / PARQUET_DIR
    names = [*(os.listdir(folder) if folder.is_dir() else [])]
    names += [n.removeprefix(f"{PARQUET_DIR}/") for n in named if isinstance(n, str)]
    numbers = [int(m.group(1)) for name in names if (m := pattern.fullmatch(name))]
    return max(numbers, default=-1) + 1


def drop_partial_parts(
    out_dir: str | os.PathLike,
    prefix: str,
    entries: dict[str, dict[str, Any]],
    redo: set[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """``entries`` without those of a part of ``prefix`` that is not whole in the manifest,
    or that holds an input in ``redo`` (to be computed again), that part deleted: a part is
    kept only when exactly as many entries name it as it has rows and none is redone. A run
    killed after writing a part but before all its entries reached the manifest leaves one
    (the rows it lacks are computed again, so keeping it would show them twice to readers
    of the folder); its listed inputs are then computed again too."""
    pattern = re.compile(re.escape(prefix) + r"part-\d{5,}\.parquet")
    folder = Path(out_dir) / PARQUET_DIR
    names = sorted(os.listdir(folder)) if folder.is_dir() else []
    listed: dict[str, int] = {}
    for e in entries.values():
        if e.get("status") == "ok" and e.get("output"):
            listed[e["output"]] = listed.get(e["output"], 0) + 1
    stale = {entries[p].get("output") for p in redo if p in entries}
    dropped = set()
    for name in names:
        output = f"{PARQUET_DIR}/{name}"
        if not pattern.fullmatch(name):
            continue
        if output in stale or listed.get(output, 0) != _rows(folder / name):
            (folder / name).unlink()
            dropped.add(output)
    return {p: e for p, e in entries.items() if e.get("output") not in dropped}


def _rows(path: Path) -> int:
    """Rows of a parquet file from its footer; -1 when it cannot be read."""
    _, pq = _pa()
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return -1


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("--format parquet needs pyarrow: pip install 'w2v[parquet]'") from None
    return pa, pq


def check_available() -> None:
    """ImportError with the install command unless pyarrow can be imported."""
    _pa()


class ParquetWriter:
    """Collects rows and writes them as parts of at most ``part_bytes`` of arrays.

    :meth:`add` takes one input's row and returns the manifest entries now safe to append
    (those of a part just written, each with ``output`` set to it); :meth:`flush` writes
    what is held. Write errors (OSError) propagate; the rows held are then dropped.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        layers: list[int],
        dtype_out: str,
        settings: dict[str, Any],
        prefix: str = "",
        part_bytes: int = PART_BYTES,
        named: Iterable[Any] = (),
    ) -> None:
        self.out_dir = Path(out_dir)
        self.layers = list(layers)
        self.dtype = np.dtype(dtype_out)
        self.metadata = json.dumps(settings)
        self.prefix = prefix
        self.part_bytes = int(part_bytes)
        self.number = next_part_number(out_dir, prefix, named)
        self._rows: list[tuple[str, float, int, np.ndarray, dict[str, Any]]] = []
        self._bytes = 0

    def add(
        self, key: str, duration: float, frames: int, array: np.ndarray, entry: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Hold one row: ``array`` ``(layers, dim)`` or ``(layers, frames, dim)``."""
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.shape[0] != len(self.layers):
            raise ValueError(f"array has {array.shape[0]} layers, expected {len(self.layers)}")
        self._rows.append((key, float(duration), int(frames), array, entry))
        self._bytes += array.nbytes
        return self.flush() if self._bytes >= self.part_bytes else []

    def flush(self) -> list[dict[str, Any]]:
        """Write the rows held as the next part; their entries, each naming it."""
        if not self._rows:
            return []
        rows, self._rows, self._bytes = self._rows, [], 0
        name = part_name(self.prefix, self.number)
        table = self._table(rows)
        _, pq = _pa()
        # no compression: embeddings are noise-like floats that barely compress, and plain
        # pages keep reading cheap
        atomic_write(
            self.out_dir / name,
            lambda tmp: pq.write_table(table, str(tmp), compression="none"),
        )
        self.number += 1
        return [{**entry, "output": name} for *_, entry in rows]

    def _table(self, rows: list[tuple[str, float, int, np.ndarray, dict[str, Any]]]):
        pa, _ = _pa()
        value = pa.from_numpy_dtype(self.dtype)
        columns = {
            "path": pa.array([column_text(r[0]) for r in rows], pa.string()),
            "duration": pa.array([r[1] for r in rows], pa.float64()),
            "frames": pa.array([r[2] for r in rows], pa.int64()),
        }
        for j, layer in enumerate(self.layers):
            arrays = [r[3][j] for r in rows]  # (dim,) or (frames, dim) each
            dim = arrays[0].shape[-1]
            flat = pa.array(np.concatenate([a.reshape(-1) for a in arrays]), value)
            vectors = pa.FixedSizeListArray.from_arrays(flat, dim)
            if arrays[0].ndim == 2:  # per-frame: a list of vectors per row
                offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in arrays])])
                vectors = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), vectors)
            columns[layer_column(layer)] = vectors
        table = pa.table(columns)
        return table.replace_schema_metadata({METADATA_KEY: self.metadata.encode()})


def column_text(text: str) -> str:
    """``text`` as an Arrow string can hold it: a file name's undecodable bytes (lone
    surrogates, see :mod:`w2v.pipeline.outputs`) become ``\\xNN`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class RowFrames(Sequence):
    """One layer's frames of every item (``--pool none``): ``layer[i]`` is item i's
    ``(frames, dim)`` array, a view into the column read from the memory-mapped parts;
    ``lengths[i]`` its frame count."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self._arrays = arrays
        self.lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, i):  # type: ignore[override]
        return self._arrays[i]

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())


def entry_layers(
    out_dir: str | os.PathLike, entries: list[dict[str, Any]], layers: list[int], pool: str
) -> dict[int, Any]:
    """The ``layers`` of the inputs ``entries`` (ok manifest entries of a parquet run) list,
    in their order: ``(items, dim)`` float32 per layer when pooled, a :class:`RowFrames`
    with ``pool == "none"``. The parts are read memory-mapped; an entry's row is the one
    whose ``path`` (the input's key) ends its input path. KeyError naming an input whose
    row is not in its part."""
    _, pq = _pa()
    root = Path(out_dir)
    values: dict[int, list[np.ndarray | None]] = {k: [None] * len(entries) for k in layers}
    by_part: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_part.setdefault(e["output"], []).append(i)
    for part, items in by_part.items():
        names = [layer_column(k) for k in layers]
        table = pq.read_table(root / part, columns=["path", *names], memory_map=True)
        rows = {key: r for r, key in enumerate(table.column("path").to_pylist())}
        where = [_row(rows, column_text(entries[i]["path"])) for i in items]
        for layer, name in zip(layers, names, strict=True):
            per_row = _rows_of(table.column(name).combine_chunks())
            for i, r in zip(items, where, strict=True):
                values[layer][i] = per_row[r]
    if pool == "none":
        return {k: RowFrames(v) for k, v in values.items()}
    return {k: np.stack(v).astype(np.float32, copy=False) for k, v in values.items()}


def _row(rows: dict[str, int], path: str) -> int:
    """The row whose key is the longest ending of ``path`` (``/r/sub/a.wav``: ``sub/a.wav``
    before ``a.wav``)."""
    parts = path.split("/")
    for start in range(len(parts)):
        key = "/".join(parts[start:])
        if key in rows:
            return rows[key]
    raise KeyError(f"{path}: no row of its parquet part holds it")


def _rows_of(col: Any) -> list[np.ndarray]:
    """A layer column → one array per row: ``(dim,)`` pooled, ``(frames, dim)`` per frame."""
    pa, _ = _pa()
    if pa.types.is_fixed_size_list(col.type):
        flat = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
        return list(flat)
    vectors = col.flatten()
    values = vectors.flatten().to_numpy().reshape(-1, vectors.type.list_size)
    offsets = col.offsets.to_numpy()
    offsets = offsets - offsets[0]
    return [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def parquet_files(out_dir: str | os.PathLike) -> list[Path]:
    """The parquet files of a run's DIR (or of the ``parquet`` folder itself), sorted."""
    folder = Path(out_dir)
    if (folder / PARQUET_DIR).is_dir():
        folder = folder / PARQUET_DIR
    return sorted(p for p in folder.glob("*.parquet") if p.is_file())


def read_parquet(
    path: str | os.PathLike, layer: int | None = None
) -> tuple[list[str], dict[int, Any]]:
    """Read ``--format parquet`` output (a DIR, its ``parquet`` folder, or one file) with
    memory mapping: ``(keys, {layer: values})``, one key per row in file order. Pooled
    values are one array ``(rows, dim)``; per-frame values a list of ``(frames, dim)``
    arrays (views into one buffer). ``layer``: only that layer (an index of the run)."""
    pa, pq = _pa()
    p = Path(path)
    files = [p] if p.is_file() else parquet_files(p)
    if not files:
        raise FileNotFoundError(f"no parquet files in {p}")
    tables = [pq.read_table(f, memory_map=True) for f in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    keys = table.column("path").to_pylist()
    out: dict[int, Any] = {}
    for name in table.column_names:
        if not name.startswith("layer_") or (layer is not None and name != layer_column(layer)):
            continue
        rows = _rows_of(table.column(name).combine_chunks())
        pooled = bool(rows) and rows[0].ndim == 1
        out[int(name.removeprefix("layer_"))] = np.stack(rows) if pooled else rows
    return keys, out
