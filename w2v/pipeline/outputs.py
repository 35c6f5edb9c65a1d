"""Output files of ``w2v embed``: per-input arrays, the manifest, atomic writes, resume.

Layout of the output directory ``DIR``:

* one file per input at ``DIR/<key><suffix>``: ``<key>`` is the input's path
  relative to the directory it was found under (``ROOT/sub/a.flac`` →
  ``sub/a.flac``), its file name when given directly, and for a list file its
  path relative to the list file's directory when inside it, else its file
  name; ``<suffix>`` is ``.npy`` or ``.safetensors``.
* ``npy``: one float32 array, ``(layers, dim)`` pooled (``2 * dim`` for
  ``stats``) or ``(layers, frames, dim)`` unpooled, layers in the order asked.
* ``safetensors``: one float32 tensor per layer named by its index (``"0"``,
  ``"6"``, ``"12"``), each ``(dim,)`` pooled or ``(frames, dim)`` unpooled; the
  file metadata records ``layers`` (JSON list) and ``pool``.
* ``DIR/manifest.jsonl``: one JSON object per input (see :data:`ENTRY_FIELDS`).

Frame ``t`` of an unpooled output covers input samples ``[320 t, 320 t + 400)``
at 16 kHz (a 25 ms window every 20 ms).

Crash safety: every file is written to a temporary file in the same
directory and moved into place with ``os.replace``, so a run killed at any
moment leaves either the complete old file or the complete new one. During a
run, manifest lines are appended (one ``write`` per line, flushed); readers
deduplicate by ``path``, the last line winning, and skip a torn last line. At
the end of a run the manifest is rewritten atomically with one line per input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from w2v.atomic import atomic_write_file

FORMATS = {"npy": ".npy", "safetensors": ".safetensors"}
MANIFEST = "manifest.jsonl"

ENTRY_FIELDS = (
    "path",  # the input file, absolute
    "status",  # "ok" or "error"
    "error",  # one-line reason, or null
    "output",  # output file relative to DIR, or null on error
    "duration",  # seconds of audio in the file (header), or null if unreadable
    "sample_rate",  # the file's own sample rate
    "channels",  # the file's channel count
    "frames",  # model frames of the output (pooled over, or the frame axis)
    "layers",  # layer indices stored, in order
    "pool",  # "mean" | "stats" | "none"
    "format",  # "npy" | "safetensors"
    "model",  # the model as given (path or hub id)
    "dtype",  # compute dtype
    "channel",  # channel picked, or null for the mean of all channels
)

SETTINGS = ("layers", "pool", "format", "model", "dtype", "channel")
"""Entry fields that must match for a finished output to be reused."""


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def output_name(key: str, fmt: str) -> str:
    """``sub/a.flac`` → ``sub/a.flac.npy``."""
    return key + FORMATS[check_format(fmt)]


def write_output(
    path: str | os.PathLike, array: np.ndarray, layers: list[int], pool: str, fmt: str
) -> Path:
    """Write one input's embeddings ``(layers, ...)`` as ``fmt``, atomically."""
    check_format(fmt)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape[0] != len(layers):
        raise ValueError(f"array has {array.shape[0]} layers, expected {len(layers)}")
    if fmt == "npy":
        return atomic_write_file(path, lambda f: np.save(f, array, allow_pickle=False))
    from safetensors.numpy import save

    tensors = {str(layer): np.ascontiguousarray(array[i]) for i, layer in enumerate(layers)}
    blob = save(tensors, metadata={"layers": json.dumps(layers), "pool": pool})
    return atomic_write_file(path, lambda f: f.write(blob))


def read_output(path: str | os.PathLike) -> np.ndarray:
    """Read an output file back as ``(layers, ...)`` float32, whatever its format."""
    p = Path(path)
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    from safetensors import safe_open

    with safe_open(str(p), framework="numpy") as f:
        meta = f.metadata() or {}
        names = [str(i) for i in json.loads(meta["layers"])] if "layers" in meta else list(f.keys())
        return np.stack([f.get_tensor(n) for n in names])


# Manifest ----------------------------------------------------------------------


def read_manifest(out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Entries of ``DIR/manifest.jsonl`` by input path, the last line for a path winning.

    Lines that are not complete JSON objects (a run killed mid-line) are
    skipped. An ``ok`` entry whose output file a later entry for another path
    also claims is dropped: that file now holds the later input.
    """
    path = Path(out_dir) / MANIFEST
    entries: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return entries
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        entries.pop(entry["path"], None)  # re-insert: order follows the latest line
        entries[entry["path"]] = entry
    owner: dict[str, str] = {}
    for p, e in entries.items():
        if e.get("status") == "ok" and e.get("output"):
            owner[e["output"]] = p
    return {
        p: e
        for p, e in entries.items()
        if not (e.get("status") == "ok" and e.get("output") and owner[e["output"]] != p)
    }


def is_done(
    entry: dict[str, Any] | None,
    settings: dict[str, Any],
    out_dir: str | os.PathLike,
    output: str | None = None,
) -> bool:
    """True when ``entry`` says ok with the same ``settings`` and its output file
    (``output``, relative to ``out_dir``, when given) exists."""
    if not entry or entry.get("status") != "ok" or not entry.get("output"):
        return False
    if output is not None and entry["output"] != output:
        return False
    if any(entry.get(k) != v for k, v in settings.items()):
        return False
    return (Path(out_dir) / entry["output"]).is_file()


class ManifestWriter:
    """Appends entries to ``DIR/manifest.jsonl`` during a run; :meth:`close` compacts it.

    Each entry is one ``write`` of one line, flushed at once, so a killed run
    loses at most a torn last line, which :func:`read_manifest` skips.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / MANIFEST
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if needs_newline:  # a killed run tore the last line; keep ours on a line of its own
            self._write("\n")

    def _write(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()

    def append(self, entry: dict[str, Any]) -> None:
        self._write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self, compact: bool = True) -> None:
        if self._file.closed:
            return
        self._file.close()
        if compact:
            compact_manifest(self.path.parent)

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compact_manifest(out_dir: str | os.PathLike) -> Path:
    """Rewrite ``DIR/manifest.jsonl`` atomically with exactly one line per input."""
    entries = read_manifest(out_dir)
    text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries.values())
    return atomic_write_file(Path(out_dir) / MANIFEST, lambda f: f.write(text), binary=False)
