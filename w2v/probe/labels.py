"""Label tables for utterance tasks, and joining labels to embedded inputs.

Two file forms, told apart by their first line:

* CSV or TSV with a header row (delimiter: tab for ``.tsv``/``.tab``, comma for
  ``.csv``, otherwise whichever of the two the header holds): a key column (a path or an
  utterance id: the first column named ``path``, ``file``, ``filename``, ``audio``,
  ``utt``, ``utt_id``, ``utterance`` or ``id``, else the first column) and label columns;
* Kaldi-style ``KEY VALUE`` lines without a header (``utt2spk``, ``utt2lang``): one label
  column named after the file (``utt2spk`` → ``spk``).

Empty cells and ``NA``/``nan`` are missing values, counted per column. A column is
numeric (probed by regression) when every value present reads as a finite number,
otherwise categorical (classification); ``--classify``/``--regress`` override that.

Keys are joined to the inputs' paths (:class:`PathIndex`): an absolute key must equal
the path; a relative key matches the path's last components (``spk1/a.wav``), with or
without the file's extension (``a``, ``spk1/a``). A key that fits two inputs is an error.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from w2v.errors import UsageError, quoted, shown

KEY_COLUMNS = ("path", "file", "filename", "audio", "utt", "utt_id", "utterance", "id")
"""Column names taken as the key column, in this order of preference (case-insensitive)."""
MISSING = ("", "na", "n/a", "nan", "none", "null")
"""Cell values (case-insensitive, stripped) that mean "no label"."""
KINDS = ("class", "number")


@dataclass(frozen=True)
class LabelTable:
    """Rows of a label file: ``keys[r]`` and ``columns[name][r]`` (None when missing);
    ``lines[r]`` is row r's line number in ``source``."""

    source: str
    key_column: str
    keys: list[str]
    columns: dict[str, list[str | None]]
    lines: list[int]


def read_table(path: str | os.PathLike, key_column: str | None = None) -> LabelTable:
    """Read a CSV/TSV or Kaldi-style label file (see the module docstring).

    Raises :class:`UsageError` naming the file and line for a missing file, a row of the
    wrong width, an empty or repeated key, or an unknown ``key_column``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read labels {shown(str(p))}: {shown(e)}") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise UsageError(f"labels file {shown(str(p))} is empty")
    delimiter = _delimiter(p, first)
    if delimiter is None:
        return _read_kaldi(p, lines)
    rows = list(csv.reader(lines, delimiter=delimiter))
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    (_, header), body = numbered[0], numbered[1:]
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or "" in header:
        raise UsageError(f"{shown(str(p))} line 1: column names must be non-empty and distinct")
    key = _key_column(header, key_column, p)
    k = header.index(key)
    keys, lines_out = [], []
    columns: dict[str, list[str | None]] = {h: [] for h in header if h != key}
    for number, row in body:
        if len(row) != len(header):
            raise UsageError(
                f"{shown(str(p))} line {number}: {len(row)} fields, the header has {len(header)}"
            )
        keys.append(row[k].strip())
        lines_out.append(number)
        for h, cell in zip(header, row, strict=True):
            if h != key:
                columns[h].append(_cell(cell))
    _check_keys(keys, lines_out, p)
    return LabelTable(str(p), key, keys, columns, lines_out)


def _delimiter(p: Path, first: str) -> str | None:
    suffix = p.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    if "\t" in first:
        return "\t"
    if "," in first:
        return ","
    return None


def _key_column(header: list[str], wanted: str | None, p: Path) -> str:
    if wanted is not None:
        if wanted not in header:
            raise UsageError(
                f"{shown(str(p))} has no column {quoted(wanted)} (columns: {shown(', '.join(header))})"
            )
        return wanted
    lower = [h.lower() for h in header]
    for name in KEY_COLUMNS:
        if name in lower:
            return header[lower.index(name)]
    return header[0]


def _read_kaldi(p: Path, lines: list[str]) -> LabelTable:
    stem = p.name.split(".")[0]
    name = stem.split("2", 1)[1] if "2" in stem and stem.split("2", 1)[1] else (stem or "label")
    keys, values, numbers = [], [], []
    for i, line in enumerate(lines, 1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) < 2:
            raise UsageError(f"{shown(str(p))} line {i}: expected 'KEY VALUE', got one field")
        keys.append(fields[0])
        values.append(_cell(fields[1]))
        numbers.append(i)
    _check_keys(keys, numbers, p)
    return LabelTable(str(p), "key", keys, {name: values}, numbers)


def _cell(cell: str) -> str | None:
    cell = cell.strip()
    return None if cell.lower() in MISSING else cell


def _check_keys(keys: list[str], lines: list[int], p: Path) -> None:
    seen: dict[str, int] = {}
    for key, line in zip(keys, lines, strict=True):
        if not key:
            raise UsageError(f"{shown(str(p))} line {line}: empty key")
        if key in seen:
            raise UsageError(
                f"{shown(str(p))} line {line}: key {quoted(key)} repeats line {seen[key]}"
            )
        seen[key] = line


def column_kind(values: Sequence[str | None]) -> str:
    """``"number"`` when every value present reads as a finite number, else ``"class"``."""
    present = [v for v in values if v is not None]
    if not present:
        return "class"
    try:
        return "number" if all(math.isfinite(float(v)) for v in present) else "class"
    except ValueError:
        return "class"


# Joining keys to paths ---------------------------------------------------------------


class PathIndex:
    """Finds the input a label key names (see the module docstring)."""

    _AMBIGUOUS = -1

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self._exact = {os.path.normpath(p): i for i, p in enumerate(self.paths)}
        self._suffix: dict[str, int] = {}
        for i, path in enumerate(self.paths):
            parts = PurePosixPath(path.replace(os.sep, "/")).parts
            stem = PurePosixPath(parts[-1]).stem if parts else ""
            for n in range(1, len(parts) + 1):
                tail = parts[len(parts) - n :]
                self._add("/".join(tail), i)
                self._add("/".join((*tail[:-1], stem)), i)

    def _add(self, key: str, i: int) -> None:
        have = self._suffix.get(key)
        self._suffix[key] = i if have is None or have == i else self._AMBIGUOUS

    def find(self, key: str) -> int | None:
        """The index of the input ``key`` names, or None. :class:`UsageError` when it could
        name two inputs."""
        k = key.replace("\\", "/")
        if os.path.isabs(k):
            return self._exact.get(os.path.normpath(k))
        k = str(PurePosixPath(k))
        found = self._suffix.get(k.lstrip("/"))
        if found == self._AMBIGUOUS:
            raise UsageError(
                f"label key {quoted(key)} matches more than one embedded input; give more of "
                "its path"
            )
        return found


@dataclass(frozen=True)
class Join:
    """Rows of a label source joined to inputs: ``items[r]`` is row r's input index (or -1);
    ``unmatched`` the keys no input has; ``unlabelled`` the inputs no row names."""

    items: list[int]
    unmatched: list[str]
    unlabelled: list[int]


def join(keys: Sequence[str], paths: Sequence[str], source: str) -> Join:
    """Join label ``keys`` to embedded input ``paths``. :class:`UsageError` when two keys
    name the same input, or none matches any."""
    index = PathIndex(paths)
    items, unmatched, owner = [], [], {}
    for key in keys:
        i = index.find(key)
        if i is None:
            unmatched.append(key)
            items.append(-1)
            continue
        if i in owner:
            raise UsageError(
                f"{shown(source)}: keys {quoted(owner[i])} and {quoted(key)} name the same "
                f"input {shown(paths[i])}"
            )
        owner[i] = key
        items.append(i)
    if not owner:
        example = f" (first key {quoted(keys[0])}, first input {shown(paths[0])})" if keys else ""
        raise UsageError(f"no key of {shown(source)} matches an embedded input{example}")
    unlabelled = [i for i in range(len(paths)) if i not in owner]
    return Join(items, unmatched, unlabelled)
