"""Time-aligned labels for frame tasks (Praat TextGrid tiers, CTM files) on w2v's frame grid.

The grid: frame ``t`` covers input samples ``[hop * t, hop * t + field)`` at 16 kHz (hop
320, field 400 for every public model: :attr:`Config.hop_length`,
:attr:`Config.receptive_field`), so its centre is at sample ``hop * t + field / 2``
(12.5 ms + 20 ms × t). A frame takes the label of the interval ``[start, end)`` holding its
centre: a centre exactly on a boundary belongs to the interval that starts there.
Boundaries are read in seconds and rounded to the nearest half sample, where the centres lie.

Unlabelled frames: a frame whose centre lies in no interval (a gap between CTM words,
before the first or after the last interval) or in an interval with empty text (Praat's
unlabelled stretches) has no label and is left out of the task (counted). Non-empty
silence marks (``sil``, ``sp``, ``<eps>``) are labels like any other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v.config import SAMPLE_RATE, Config
from w2v.errors import UsageError, quoted, shown

TEXTGRID_SUFFIX = ".textgrid"
CTM_SUFFIX = ".ctm"

Interval = tuple[float, float, str]
"""(start seconds, end seconds, text)."""


def frame_centres(frames: int, config: Config | None = None) -> np.ndarray:
    """(frames,) int64: each frame's centre in half samples at 16 kHz (integers, so a centre
    on a boundary is compared exactly)."""
    config = config or Config()
    return 2 * config.hop_length * np.arange(frames, dtype=np.int64) + config.receptive_field


def frame_labels(
    intervals: list[Interval], frames: int, config: Config | None = None
) -> list[str | None]:
    """The label of each of ``frames`` frames (None: unlabelled; see the module docstring)."""
    if not intervals:
        return [None] * frames
    order = sorted(intervals, key=lambda iv: iv[0])
    starts = np.array([_half_samples(iv[0]) for iv in order], dtype=np.int64)
    ends = np.array([_half_samples(iv[1]) for iv in order], dtype=np.int64)
    centres = frame_centres(frames, config)
    k = np.searchsorted(starts, centres, side="right") - 1  # last interval starting at or before
    out: list[str | None] = []
    for c, j in zip(centres.tolist(), k.tolist(), strict=True):
        text = order[j][2] if j >= 0 and c < ends[j] else ""
        out.append(text or None)
    return out


def _half_samples(seconds: float) -> int:
    return round(seconds * 2 * SAMPLE_RATE)


@dataclass(frozen=True)
class Alignments:
    """Aligned labels: ``columns[name][r]`` holds the intervals of utterance ``keys[r]``."""

    source: str
    keys: list[str]
    columns: dict[str, list[list[Interval]]]


def read_alignments(path: str | os.PathLike, tiers: list[str] | None = None) -> Alignments:
    """A CTM file, one TextGrid file, or a directory searched for ``*.TextGrid`` files (the
    key of each is its path under the directory without the suffix). TextGrid interval
    tiers become label columns by name (``tiers``: only those); a CTM is one column named
    after the file. :class:`UsageError` naming the file and line for anything unreadable."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() == TEXTGRID_SUFFIX)
        if not files:
            raise UsageError(f"{shown(str(p))} holds no .TextGrid files")
        keys = [f.relative_to(p).with_suffix("").as_posix() for f in files]
        return _from_textgrids(str(p), keys, files, tiers)
    if p.suffix.lower() == TEXTGRID_SUFFIX:
        return _from_textgrids(str(p), [p.stem], [p], tiers)
    if p.suffix.lower() == CTM_SUFFIX:
        if tiers:
            raise UsageError(
                f"--label picks TextGrid tiers; {shown(str(p))} is a CTM, which has one column"
            )
        return read_ctm(p)
    raise UsageError(
        f"frame labels {shown(str(p))}: expected a .ctm file, a .TextGrid file or a directory "
        "of .TextGrid files"
    )


def _from_textgrids(
    source: str, keys: list[str], files: list[Path], tiers: list[str] | None
) -> Alignments:
    columns: dict[str, list[list[Interval]]] = {}
    for r, f in enumerate(files):
        grid = read_textgrid(f)
        names = tiers if tiers else list(grid)
        for name in names:
            if name not in grid:
                raise UsageError(
                    f"{shown(str(f))} has no interval tier {quoted(name)} "
                    f"(tiers: {shown(', '.join(grid))})"
                )
            columns.setdefault(name, [[] for _ in files])[r] = grid[name]
    return Alignments(source, keys, columns)


_TOKEN = re.compile(
    r'"(?:[^"]|"")*"'  # a string, "" inside for a quote
    r"|\[[^\]\"]*\]"  # [n] of the long form: skipped
    r"|<[A-Za-z]+>"  # <exists>
    r"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"  # a number
    r"|[A-Za-z_][A-Za-z_0-9]*"  # a field name of the long form: skipped
    r"|\S"
)


def read_textgrid(path: str | os.PathLike) -> dict[str, list[Interval]]:
    """Interval tiers of a Praat TextGrid (long or short text form, UTF-8 or UTF-16), by
    name; point tiers are skipped."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {shown(str(p))}: {shown(e)}") from None
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise UsageError(f"{shown(str(p))} is not UTF-8 or UTF-16 text") from None
    values: list[str | float] = []
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok.startswith('"'):
            values.append(tok[1:-1].replace('""', '"'))
        elif tok[0].isdigit() or tok[0] in "+-.":
            values.append(float(tok))
    try:
        return _tiers(values)
    except (IndexError, TypeError, ValueError):
        raise UsageError(f"{shown(str(p))} is not a Praat TextGrid in text form") from None


def _tiers(v: list[str | float]) -> dict[str, list[Interval]]:
    if v[0] not in ("ooTextFile", "ooTextFile short") or v[1] != "TextGrid":  # short: old Praat
        raise ValueError("not a TextGrid")
    # xmin, xmax, then the tier count (after <exists>, which is no value here)
    n_tiers, pos = int(v[4]), 5
    tiers: dict[str, list[Interval]] = {}
    for _ in range(n_tiers):
        kind, name = v[pos], v[pos + 1]
        count = int(v[pos + 4])
        pos += 5
        if kind == "IntervalTier":
            tiers[str(name)] = [
                (float(v[pos + 3 * j]), float(v[pos + 3 * j + 1]), str(v[pos + 3 * j + 2]).strip())
                for j in range(count)
            ]
            pos += 3 * count
        elif kind == "TextTier":
            pos += 2 * count
        else:
            raise ValueError(f"unknown tier class {kind!r}")
    return tiers


def read_ctm(path: str | os.PathLike) -> Alignments:
    """A CTM file: ``UTT CHANNEL START DURATION LABEL [CONFIDENCE]`` per line (``;;``
    comments), one column named after the file."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {shown(str(p))}: {shown(e)}") from None
    by_key: dict[str, list[Interval]] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith(";;"):
            continue
        if len(fields) not in (5, 6):
            raise UsageError(
                f"{shown(str(p))} line {number}: expected 'UTT CHANNEL START DURATION LABEL "
                f"[CONFIDENCE]', got {len(fields)} fields"
            )
        try:
            start, duration = float(fields[2]), float(fields[3])
        except ValueError:
            raise UsageError(
                f"{shown(str(p))} line {number}: start and duration must be numbers"
            ) from None
        if not (start >= 0 and duration >= 0) or start + duration == float("inf"):
            raise UsageError(
                f"{shown(str(p))} line {number}: start and duration must be finite and non-negative"
            )
        by_key.setdefault(fields[0], []).append((start, start + duration, fields[4]))
    if not by_key:
        raise UsageError(f"{shown(str(p))} holds no CTM lines")
    keys = list(by_key)
    return Alignments(str(p), keys, {p.stem: [by_key[k] for k in keys]})
