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
* ``parquet``: rows of many inputs per file under ``DIR/parquet`` (:mod:`w2v.pipeline.parquet`).
* arrays are stored float32, or float16 with ``dtype_out`` (:data:`DTYPES_OUT`).
* ``DIR/manifest.jsonl``: one JSON object per input (fields in :data:`ENTRY_SCHEMA`), sorted
  by path; a shard of a run writes its own (:mod:`w2v.pipeline.merge`).

Head outputs (``w2v embed --head``) go into the safetensors file beside the layers, float32,
computed in the same batched pass as the layers (equal to the head run on the input
alone: heads read valid frames only), and the metadata records ``head`` (its kind):

* ``"logits"``: ``(labels,)`` for sequence and speech classification, ``(frames, labels)``
  for frame classification and ``(frames, vocab)`` for CTC, cut to the input's valid
  frames; ``(dim,)`` for x-vector;
* ``"embeddings"``: ``(dim,)``, the x-vector embedding (x-vector only).

The manifest settings record ``head`` and ``labels`` (the logits' column names: the
checkpoint's ``id2label``, or the CTC vocabulary), and for CTC each entry's ``text`` holds
the greedy transcript. ``npy`` holds one array, so ``--head`` needs ``safetensors``
(:func:`check_head_format` refuses ``npy``).

Frame ``t`` of an unpooled output covers input samples ``[320 t, 320 t + 400)``
at 16 kHz (a 25 ms window every 20 ms).

Manifest encoding: UTF-8 JSON Lines. Paths are Python's view of the file
system's bytes: a name that is not valid UTF-8 (``caf\xe9.wav`` on Linux)
has each undecodable byte ``0xXY`` as the lone surrogate ``U+DCXY``
(``surrogateescape``), which the manifest writes as the JSON escape
``"\\udcXY"``; the file stays valid UTF-8, and ``os.fsencode(entry["path"])``
gives the name's bytes back.

Crash safety: every file is written to a temporary file in the same
directory and moved into place with ``os.replace``, so a run killed at any
moment leaves either the complete old file or the complete new one. During a
run, manifest lines are appended (one ``write`` per line); readers
deduplicate by ``path``, the last line winning, and drop a line that is not
a whole JSON object in UTF-8 (a torn tail, even one cut inside a character),
so that input is computed again. At the end of a run the manifest is
rewritten atomically with one line per input.

Only w2v's own files: the manifest and the lock file are opened without following a
symbolic link and must be regular files (anything else there is refused with a message);
a manifest entry is used only when its fields have the types the schema gives, and
the files it names are only ever read, replaced or removed inside ``DIR`` with an output
suffix (:func:`is_output_name`), so a hostile manifest cannot reach outside ``DIR``. A
manifest line longer than :data:`MAX_MANIFEST_LINE` is dropped unread.

One run at a time: a run holds an exclusive ``flock`` on ``DIR/.w2v-embed.lock``
(:class:`OutputLock`); a second run into the same ``DIR`` is refused with a
message naming the first. The operating system drops the lock when a process
ends, killed or not, so a stale lock never blocks.

Settings: every entry of one ``DIR`` has the same :data:`SETTINGS`. A run with
other settings is refused (:func:`settings_mismatch`); with ``overwrite`` the
old entries and the outputs they list are removed first.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from w2v.atomic import atomic_write_file
from w2v.config import SAMPLE_RATE
from w2v.errors import UsageError, one_line, shown
from w2v.longform import ChunkPolicy

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

FORMATS = {"npy": ".npy", "safetensors": ".safetensors", "parquet": ".parquet"}
"""Output formats and the suffix of their files. ``npy`` and ``safetensors`` write one file
per input; ``parquet`` writes rows of many inputs per file (:mod:`w2v.pipeline.parquet`)."""
PER_FILE_FORMATS = ("npy", "safetensors")
DTYPES_OUT = ("float32", "float16")
"""Value types of the stored arrays (``--dtype-out``); float16 halves the disk."""
HEAD_OUTPUTS = ("logits", "embeddings")
"""Tensor names a head's outputs take in a safetensors output file."""
MANIFEST = "manifest.jsonl"
LOCK = ".w2v-embed.lock"
"""Lock file in DIR held (``flock``) by the run writing there."""
MAX_MANIFEST_LINE = 1 << 24
"""Bytes of one manifest line at most (16 MiB; an entry is well under 1 KiB plus its
transcript): a longer line is dropped as unreadable without being held in memory."""


class Field(NamedTuple):
    """One field of a manifest entry."""

    name: str
    setting: bool  # the same in every entry of DIR (else the run is refused)
    meaning: str


ENTRY_SCHEMA = (
    Field("path", False, "the input file, absolute"),
    Field("status", False, '"ok" or "error"'),
    Field("error", False, "one-line reason, or null"),
    Field("output", False, "output file relative to DIR, or null on error"),
    Field("duration", False, "seconds of audio in the file (header), or null if unreadable"),
    Field("sample_rate", False, "the file's own sample rate, or null if unreadable"),
    Field("channels", False, "the file's channel count, or null if unreadable"),
    Field("frames", False, "model frames of the output (pooled over, or the frame axis)"),
    Field("layers", True, "layer indices stored, in order"),
    Field("pool", True, '"mean" | "stats" | "none"'),
    Field("format", True, '"npy" | "safetensors" | "parquet"'),
    Field("model", True, "the model as given: a path made absolute, a hub id, or an object's name"),
    Field("dtype", True, 'compute dtype ("float32", "bfloat16", "float16")'),
    Field("backend", True, 'what computed the model: "torch" or "onnxruntime"'),
    Field("dtype_out", True, 'stored value type ("float32", "float16")'),
    Field("channel", True, "channel picked, or null for the mean of all channels"),
    Field("head", True, "head kind written beside the layers (--head), or null"),
    Field("labels", True, "names of the head's logits columns in order, or null"),
    Field("text", False, "greedy CTC transcript (--head on a CTC model), or null"),
    Field("chunk_seconds", False, "window length the input was computed in, or null (whole)"),
    Field("context_seconds", False, "context each side of those windows, or null (whole)"),
)
"""The fields of a manifest entry, in the order they are written: the one definition."""

ENTRY_FIELDS = tuple(f.name for f in ENTRY_SCHEMA)
SETTINGS = tuple(f.name for f in ENTRY_SCHEMA if f.setting)
"""Entry fields that every entry of one DIR shares: a run with other values is refused."""

LATER_SETTINGS = {"backend": "torch", "dtype_out": "float32"}
"""Settings added after entries were first written, with the value every earlier run used:
an entry without one reads as that value, so output directories made before it existed
still resume."""


def make_settings(**values: Any) -> dict[str, Any]:
    """The run's :data:`SETTINGS` in schema order; ValueError unless exactly those are given."""
    if set(values) != set(SETTINGS):
        raise ValueError(f"settings must be exactly {SETTINGS}, got {tuple(values)}")
    return {name: values[name] for name in SETTINGS}


def new_entry(path: str, settings: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A manifest entry holding every field of :data:`ENTRY_SCHEMA` in order: ``path``,
    ``status`` "ok", the run's ``settings`` (from :func:`make_settings`), ``fields``,
    and null for the rest. ValueError for a name outside the schema."""
    unknown = set(fields) - set(ENTRY_FIELDS)
    if unknown:
        raise ValueError(f"not manifest fields: {sorted(unknown)}")
    entry: dict[str, Any] = dict.fromkeys(ENTRY_FIELDS)
    entry.update(path=path, status="ok", **make_settings(**settings), **fields)
    return entry


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def check_head_format(fmt: str) -> None:
    """:class:`UsageError` unless ``fmt`` can hold head outputs beside the layers."""
    if check_format(fmt) != "safetensors":
        raise UsageError(
            f"--head needs --format safetensors: the head's outputs are stored as named "
            f"tensors beside the layers, and {fmt} holds one array"
        )


def check_dtype_out(dtype_out: str) -> str:
    """``dtype_out`` when it is one of :data:`DTYPES_OUT`, else :class:`UsageError`."""
    if dtype_out not in DTYPES_OUT:
        raise UsageError(
            f"unknown output dtype {shown(str(dtype_out), 40)}; valid: {', '.join(DTYPES_OUT)}"
        )
    return dtype_out


def output_name(key: str, fmt: str) -> str:
    """``sub/a.flac`` → ``sub/a.flac.npy``."""
    return key + FORMATS[check_format(fmt)]


def write_output(
    path: str | os.PathLike,
    array: np.ndarray,
    layers: list[int],
    pool: str,
    fmt: str,
    head: tuple[str, dict[str, np.ndarray]] | None = None,
    dtype_out: str = "float32",
) -> Path:
    """Write one input's embeddings ``(layers, ...)`` as ``fmt`` (a per-file format),
    atomically, stored as ``dtype_out``; ``head``: ``(kind, {"logits": ..., ...})`` written
    beside them, float32 (safetensors only)."""
    if check_format(fmt) not in PER_FILE_FORMATS:
        raise ValueError(f"{fmt} is not a per-file format; see w2v.pipeline.parquet")
    array = np.ascontiguousarray(array, dtype=check_dtype_out(dtype_out))
    if array.shape[0] != len(layers):
        raise ValueError(f"array has {array.shape[0]} layers, expected {len(layers)}")
    if fmt == "npy":
        if head is not None:
            raise ValueError("npy output holds the layers only; head outputs need safetensors")
        return atomic_write_file(path, lambda f: np.save(f, array, allow_pickle=False))
    tensors = {str(layer): np.ascontiguousarray(array[i]) for i, layer in enumerate(layers)}
    metadata = {"layers": json.dumps(layers), "pool": pool}
    if head is not None:
        kind, outputs = head
        tensors.update({k: np.ascontiguousarray(v, np.float32) for k, v in outputs.items()})
        metadata["head"] = kind
    blob = safetensors_bytes(tensors, metadata)
    return atomic_write_file(path, lambda f: f.write(blob))


_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors file holding ``tensors`` (float32 or float16, in this order) and
    ``metadata``, the same bytes for the same arrays every time: the ``safetensors``
    library writes its metadata in hash-map order, which differs from call to call, and
    sharded runs are compared with single runs byte for byte.

    Layout (the format's specification): an 8-byte little-endian header length, the JSON
    header (``__metadata__``, then per tensor its dtype, shape and byte range in the data),
    padded with spaces to a multiple of 8 bytes, then the tensors' bytes one after another.
    """
    header: dict[str, Any] = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}
    offset = 0
    for name, t in tensors.items():
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return b"".join(
        [
            len(text).to_bytes(8, "little"),
            text,
            *(t.astype(t.dtype.newbyteorder("<")).tobytes() for t in tensors.values()),
        ]
    )


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


def read_head_outputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The head outputs of a safetensors output file (``{}`` when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        if "head" not in (f.metadata() or {}):
            return {}
        names = set(f.keys())
        return {k: f.get_tensor(k) for k in HEAD_OUTPUTS if k in names}


# Manifest ----------------------------------------------------------------------


def read_manifest(
    out_dir: str | os.PathLike,
    notice: Callable[[str], None] | None = None,
    name: str = MANIFEST,
) -> dict[str, dict[str, Any]]:
    """Entries of ``DIR/manifest.jsonl`` (or the manifest ``name``, such as a shard's) by
    input path, the last line for a path winning.

    The file is read line by line as bytes and each line decoded on its own; a line
    that is not a JSON object in UTF-8 (a run killed mid-line, a line cut inside a
    character), is longer than :data:`MAX_MANIFEST_LINE`, or whose fields do not have
    the schema's types (:func:`is_entry`) is dropped, and ``notice`` told so. An ``ok``
    entry whose per-file output a later entry for another path also claims is dropped: that
    file now holds the later input (a parquet part holds many). :class:`UsageError` when the manifest is not a
    regular file (a directory, a symbolic link, a device).
    """
    path = Path(out_dir) / name
    entries: dict[str, dict[str, Any]] = {}
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return entries
    dropped = []
    with os.fdopen(fd, "rb") as f:
        for number, raw in enumerate(_lines(f), 1):
            if raw is not None and not raw.strip():
                continue
            try:
                entry = None if raw is None else json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError included; deep nesting
                entry = None
            if not is_entry(entry):
                dropped.append(number)
                continue
            entries.pop(entry["path"], None)  # re-insert: order follows the latest line
            entries[entry["path"]] = entry
    if dropped and notice is not None:
        notice(
            f"{shown(str(path))}: dropped {len(dropped)} torn or unreadable line(s) "
            f"(line {', '.join(map(str, dropped[:5]))}{', ...' if len(dropped) > 5 else ''}); "
            "the inputs they recorded are computed again"
        )
    # a per-file output holds one input; a parquet part holds many
    owned = tuple(FORMATS[f] for f in PER_FILE_FORMATS)
    owner: dict[str, str] = {}
    for p, e in entries.items():
        if e.get("status") == "ok" and e.get("output") and e["output"].endswith(owned):
            owner[e["output"]] = p
    return {
        p: e
        for p, e in entries.items()
        if e.get("status") != "ok" or owner.get(e.get("output"), p) == p
    }


def _lines(f: Any) -> Any:
    """The lines of the binary file ``f``; None in place of one longer than
    :data:`MAX_MANIFEST_LINE` (skipped without holding it)."""
    while raw := f.readline(MAX_MANIFEST_LINE + 1):
        if len(raw) <= MAX_MANIFEST_LINE or raw.endswith(b"\n"):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = f.readline(1 << 20)
        yield None


def is_entry(entry: Any) -> bool:
    """Whether ``entry`` (a parsed manifest line) can be used: a dict whose ``path`` is a
    non-empty string, ``status`` "ok" or "error", ``output`` null or an output name inside
    DIR (:func:`is_output_name`), and ``duration``, ``chunk_seconds`` and
    ``context_seconds`` null or finite numbers of seconds. The other fields are only
    compared or copied, so any JSON value there is harmless."""
    if not isinstance(entry, dict):
        return False
    path, output = entry.get("path"), entry.get("output")
    if not isinstance(path, str) or not path or "\0" in path:
        return False
    if entry.get("status") not in ("ok", "error"):
        return False
    if output is not None and not is_output_name(output):
        return False
    return all(_seconds(entry.get(k)) for k in ("duration", "chunk_seconds", "context_seconds"))


def _seconds(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return value >= 0 and math.isfinite(value * SAMPLE_RATE)


def is_output_name(name: Any) -> bool:
    """Whether ``name`` can be an output file relative to DIR: a string ending in an output
    suffix, relative, without ``..`` parts or NUL bytes (never the manifest or the lock)."""
    if not isinstance(name, str) or "\0" in name or not name.endswith(tuple(FORMATS.values())):
        return False
    p = Path(name)
    return not p.is_absolute() and ".." not in p.parts


def window_for(chunking: ChunkPolicy, duration: float | None) -> tuple[float, float] | None:
    """``(chunk_seconds, context_seconds)`` that ``chunking`` uses for an input of
    ``duration`` seconds, or None when it is computed whole."""
    chunk = chunking.chunk_for(round((duration or 0.0) * SAMPLE_RATE))
    return None if chunk is None else (chunk, chunking.context_seconds)


def is_done(
    entry: dict[str, Any] | None,
    settings: dict[str, Any],
    out_dir: str | os.PathLike,
    output: str | None = None,
    chunking: ChunkPolicy | None = None,
) -> bool:
    """True when ``entry`` says ok with the same ``settings``, its output file
    (``output``, relative to ``out_dir``, when given) exists, and (``chunking`` given)
    it was computed in the windows ``chunking`` would use for it now."""
    if not entry or entry.get("status") != "ok" or not entry.get("output"):
        return False
    if output is not None and entry["output"] != output:
        return False
    if any(held_setting(entry, k) != v for k, v in settings.items()):
        return False
    if chunking is not None:
        done = entry.get("chunk_seconds"), entry.get("context_seconds")
        want = window_for(chunking, entry.get("duration")) or (None, None)
        if done != want:
            return False
    return (Path(out_dir) / entry["output"]).is_file()


def held_setting(entry: dict[str, Any], name: str) -> Any:
    """The value of setting ``name`` ``entry`` was made with (see :data:`LATER_SETTINGS`)."""
    return entry.get(name, LATER_SETTINGS.get(name))


def settings_mismatch(entries: dict[str, dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """One ``"name: A there, B now"`` per setting some entry holds with another value."""
    out = []
    for name, value in settings.items():
        there = []
        for e in entries.values():
            held = held_setting(e, name)
            if held != value and held not in there:
                there.append(held)
        if there:
            old = " / ".join(shown(json.dumps(v), 60) for v in there[:3])
            out.append(f"{name}: {old} there, {shown(json.dumps(value), 60)} now")
    return out


def remove_outputs(out_dir: str | os.PathLike, entries: dict[str, dict[str, Any]]) -> int:
    """Delete the output files ``entries`` list (only regular files inside ``out_dir`` with
    an output suffix, see :func:`is_output_name`); returns how many. OSError when one
    cannot be deleted."""
    root = Path(out_dir).resolve()
    removed = 0
    for e in entries.values():
        name = e.get("output")
        if not is_output_name(name):
            continue
        target = Path(out_dir) / name
        if not target.resolve().is_relative_to(root) or not target.is_file():
            continue  # a manifest never deletes outside DIR
        target.unlink()
        removed += 1
    return removed


def _dumps(entry: dict[str, Any]) -> str:
    """One manifest line: JSON with non-ASCII text as is, lone surrogates (bytes of a file
    name that is not UTF-8) as ``\\udcXY`` escapes, so the line encodes as UTF-8."""
    text = json.dumps(entry, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


_SURROGATE = re.compile("[\\ud800-\\udfff]")


def is_out_of_space(e: OSError) -> bool:
    """A write failed because the disk or quota is full: the run stops, no input is to blame."""
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


class ManifestWriter:
    """Appends entries to ``DIR/manifest.jsonl`` (or the manifest ``name``) during a run;
    :meth:`close` compacts it.

    Each entry is one unbuffered ``write`` of one line, so a killed run (or a
    full disk) leaves at most a torn last line, which :func:`read_manifest` drops.
    ``append`` raises OSError when the line cannot be written; opening raises
    :class:`UsageError` when the manifest is not a regular file (see :func:`open_regular`).
    """

    def __init__(self, out_dir: str | os.PathLike, name: str = MANIFEST) -> None:
        self.path = Path(out_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        self._file = os.fdopen(fd, "ab", buffering=0)
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            self._write(b"\n")  # a killed run tore the last line; start on a new one

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]

    def append(self, entry: dict[str, Any]) -> None:
        self._write(_dumps(entry).encode("utf-8"))

    def append_many(self, entries: list[dict[str, Any]]) -> None:
        """Several entries in one ``write`` (a parquet part's: all of them or, killed, none;
        a full disk may still tear it, which the next run notices)."""
        if entries:
            self._write("".join(_dumps(e) for e in entries).encode("utf-8"))

    def close(self, compact: bool = True) -> None:
        if self._file.closed:
            return
        self._file.close()
        if compact:
            compact_manifest(self.path.parent, self.path.name)

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_manifest(
    out_dir: str | os.PathLike, entries: dict[str, dict[str, Any]], name: str = MANIFEST
) -> Path:
    """Replace ``DIR/manifest.jsonl`` (or the manifest ``name``) atomically with
    ``entries``, one line each, sorted by path: the same entries give the same file, however
    the run was batched or sharded."""
    data = "".join(_dumps(entries[p]) for p in sorted(entries)).encode("utf-8")
    return atomic_write_file(Path(out_dir) / name, lambda f: f.write(data))


def compact_manifest(out_dir: str | os.PathLike, name: str = MANIFEST) -> Path:
    """Rewrite ``DIR/manifest.jsonl`` (or the manifest ``name``) atomically with exactly one
    line per input."""
    return write_manifest(out_dir, read_manifest(out_dir, name=name), name)


class OutputLock:
    """An exclusive ``flock`` on ``DIR/.w2v-embed.lock`` (or the lock file ``name``) for the
    length of a run; ``shared``: a shared one instead, which the shards of one run hold
    together (each also holding its own shard's lock exclusively) and which keeps out a
    whole run or ``w2v merge``.

    :meth:`acquire` raises :class:`UsageError` naming the run that holds it, or saying why
    the lock file cannot be opened (DIR read-only, the lock file not a regular file). The
    lock belongs to the open file, so the system releases it when the process
    ends however it ends; the file itself stays and means nothing unlocked. On a
    system without ``fcntl``, or a file system that cannot lock, runs are not locked.
    """

    def __init__(self, out_dir: str | os.PathLike, name: str = LOCK, shared: bool = False) -> None:
        self.path = Path(out_dir) / name
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        if fcntl is None:
            return self
        try:
            fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:  # a read-only or vanished DIR
            raise UsageError(f"cannot write {shown(str(self.path))}: {one_line(e)}") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UsageError(
                f"{shown(self.path.parent)} is in use by another w2v embed run ({holder}); "
                "wait for it to finish, or give another --out"
            ) from None
        except OSError:  # no locking on this file system
            os.close(fd)
            return self
        self._fd = fd
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        # who holds it, for the message another run shows; many shards hold a shared lock
        # at once, so they all write the same words
        text = (
            "the shards of a sharded run\n"
            if self.shared
            else (f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n")
        )
        try:  # a full disk may refuse it
            os.ftruncate(fd, 0)
            os.write(fd, text.encode())
        except OSError:
            pass
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_regular(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` (mode 0o666 less the umask when created) for a file of w2v's
    own in DIR, never through a symbolic link and never blocking on a FIFO.

    Raises :class:`UsageError` naming the file when it is a symbolic link or anything but
    a regular file (a directory, a FIFO, a device): w2v never writes through such a path
    or reads from it; OSError (FileNotFoundError included) for other failures.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags | nofollow | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR) or (nofollow and os.path.islink(path)):
            raise UsageError(_not_regular(path, os.lstat(path).st_mode)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UsageError(_not_regular(path, mode))
    return fd


def _not_regular(path: Path, mode: int) -> str:
    if stat.S_ISLNK(mode):
        what = "is a symbolic link"
    elif stat.S_ISDIR(mode):
        what = "is a directory"
    else:
        what = "is not a regular file"
    return (
        f"{shown(str(path))} {what}; w2v keeps a regular file of its own there and never "
        "follows or replaces anything else: remove it, or give another --out"
    )


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError as e:
        text = one_line(e)
    return shown(text, 120) or "no details"
