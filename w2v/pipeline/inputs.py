"""Inputs: command-line paths → audio files, each with the output key it is written under.

A key is the output path relative to DIR without the format's suffix (see
:mod:`w2v.pipeline.outputs`): the file's path relative to the directory it was
found under, relative to a list file's directory, or its file name.

:func:`expand` turns one path into its files (``w2v.embed`` uses it as is);
:func:`collect_inputs` does so for a whole command line, where a missing path is
a usage error and two inputs may not share an output name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from w2v.errors import UsageError, one_line, quoted, shown
from w2v.pipeline.audio import AUDIO_EXTENSIONS

LIST_EXTENSIONS = frozenset({".txt", ".lst"})
"""Inputs with these extensions are lists of paths, one per line."""

MAX_LIST_LINE = 1 << 16
"""Bytes of one list file line at most (64 KiB, far past any path the system takes): a
longer line means the file is no list of paths, and it is refused without being read whole."""

_SHOWN_CLASHES = 20
"""Colliding output names listed in the error before "... and N more"."""


@dataclass(frozen=True)
class Input:
    """One input file and its output key (the output path relative to DIR, without suffix)."""

    path: Path  # absolute, not resolved through symlinks
    key: str  # posix relative path, e.g. "sub/a.flac"
    error: str | None = None  # known bad before reading, e.g. an unknown extension


def abspath(p: str | os.PathLike) -> Path:
    """``p`` made absolute without resolving symlinks (the path the user knows)."""
    return Path(os.path.abspath(os.fspath(p)))


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Input]:
    """Expand command-line inputs into files with their output keys (see :func:`expand`).

    The same file reached twice with the same key counts once. Raises
    :class:`UsageError` when an input given does not exist, when no input is
    found, or when two files would write the same output.
    """
    missing = [abspath(given) for given in inputs if not os.path.exists(abspath(given))]
    if missing:
        p = missing[0]
        what = "list file " if p.suffix.lower() in LIST_EXTENSIONS else ""
        more = f" (and {len(missing) - 1} more input(s))" if len(missing) > 1 else ""
        raise UsageError(f"{what}{shown(str(p))}: no such file or directory{more}")
    found: list[Input] = []
    for given in inputs:
        found.extend(expand(given))
    unique: dict[tuple[Path, str], Input] = {}
    for item in found:
        unique.setdefault((item.path, item.key), item)
    items = list(unique.values())
    if not items:
        raise no_inputs()
    _check_clashes(items)
    return items


def no_inputs() -> UsageError:
    """The error for inputs that hold no audio file (an empty directory or list)."""
    return UsageError(
        "no inputs: give audio files, directories holding audio files "
        f"({', '.join(sorted(AUDIO_EXTENSIONS))}), or a .txt/.lst list of paths"
    )


def expand(given: str | os.PathLike) -> list[Input]:
    """One input path → its audio files with their output keys, in a stable order.

    * a directory ROOT: every file below it whose extension (any case) is in
      :data:`w2v.pipeline.audio.AUDIO_EXTENSIONS`, keyed by its path relative to ROOT;
      hidden files and directories (name starting with ``.``, such as macOS
      ``._x.wav`` resource forks) are left out;
    * a ``.txt`` / ``.lst`` regular file: a list of paths, one per line (``\n``; a
      ``\r`` before it is dropped), relative ones resolved against the list's
      directory, blank lines and ``#`` comments ignored, surrounding whitespace
      stripped; keyed by the path relative to the list's directory when inside it,
      else by file name. A line is UTF-8, and a byte that is not is kept as the file
      system's byte (as Python names such files, ``surrogateescape``). A list names
      audio files: a list file or directory named in it is an error for that line
      (lists are never read recursively);
    * any other path: an audio file keyed by its file name.

    A file known to be unusable before reading carries its reason in
    :attr:`Input.error`: a path that does not exist, a regular file with an
    unknown extension, a path holding a NUL byte. Special files (a FIFO, ``/dev/zero``)
    are left to :mod:`w2v.pipeline.audio`, which refuses them without opening them.
    Raises :class:`UsageError` only for a list file that cannot be read or holds no
    text (a NUL byte, a line longer than :data:`MAX_LIST_LINE`).
    """
    if "\0" in os.fsdecode(given):
        p = Path(os.fsdecode(given).replace("\0", "\\0"))
        return [Input(p, p.name, "the path holds a NUL byte")]
    p = abspath(given)
    if p.is_dir():
        return _search(p)
    if p.suffix.lower() in LIST_EXTENSIONS and p.is_file():
        return _read_list(p)
    return [_explicit(p, p.name)]


def _search(root: Path) -> list[Input]:
    files = sorted(
        f
        for f in root.rglob("*")
        if f.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(root).parts)
        and f.is_file()
    )
    return [Input(f, f.relative_to(root).as_posix()) for f in files]


def _explicit(path: Path, key: str) -> Input:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = " (a symbolic link to a missing target)" if os.path.islink(path) else ""
        return Input(path, key, f"no such file or directory{broken}")
    except OSError:
        return Input(path, key)  # decoding reports why it cannot be reached
    if stat.S_ISREG(mode) and path.suffix.lower() in LIST_EXTENSIONS:
        return Input(
            path, key, "a list file named in a list file (lists are not read inside lists)"
        )
    if stat.S_ISREG(mode) and path.suffix.lower() not in AUDIO_EXTENSIONS:
        known = ", ".join(sorted(AUDIO_EXTENSIONS))
        ext = quoted(path.suffix, 20) if path.suffix else "(none)"
        return Input(path, key, f"unknown audio extension {ext} (known: {known})")
    return Input(path, key)


def _read_list(list_file: Path) -> list[Input]:
    base = list_file.parent
    out = []
    for number, line in enumerate(_list_lines(list_file), 1):
        if not line or line.startswith("#"):
            continue
        if "\0" in line:
            raise UsageError(
                f"list file {shown(str(list_file))}: line {number} holds a NUL byte; "
                "a list file is text, one path per line"
            )
        p = abspath(base / line)  # an absolute line replaces base
        try:
            key = p.relative_to(base).as_posix()
        except ValueError:
            key = p.name
        out.append(_explicit(p, key))
    return out


def _list_lines(list_file: Path) -> Iterator[str]:
    """The stripped lines of ``list_file``, decoded as file names are (UTF-8,
    ``surrogateescape``), read one at a time."""
    try:
        with open(list_file, "rb") as f:
            number = 0
            while raw := f.readline(MAX_LIST_LINE + 1):
                number += 1
                if len(raw) > MAX_LIST_LINE and not raw.endswith(b"\n"):
                    raise UsageError(
                        f"list file {shown(str(list_file))}: line {number} is longer than "
                        f"{MAX_LIST_LINE} bytes; a list file is text, one path per line"
                    )
                yield raw.decode("utf-8", "surrogateescape").strip()
    except OSError as e:
        raise UsageError(f"cannot read list file {shown(str(list_file))}: {one_line(e)}") from None


def _check_clashes(items: list[Input]) -> None:
    by_key: dict[str, list[Path]] = {}
    for item in items:
        by_key.setdefault(item.key, []).append(item.path)
    clashes = {k: v for k, v in by_key.items() if len(v) > 1}
    if not clashes:
        return
    lines = [
        f"  {shown(k)}: " + ", ".join(shown(str(p)) for p in v) for k, v in sorted(clashes.items())
    ]
    listed = lines[:_SHOWN_CLASHES]
    if len(lines) > _SHOWN_CLASHES:
        listed.append(f"  ... and {len(lines) - _SHOWN_CLASHES} more")
    # the advice must work for any clash: a list file's entries are named by their path
    # relative to the list's directory, so a list saved in a directory above all of them
    # tells them apart (a list elsewhere names outside entries by file name alone)
    common = os.path.commonpath([str(p.parent) for v in clashes.values() for p in v])
    raise UsageError(
        f"{len(clashes)} output name(s) would be written by more than one input; outputs are "
        "named by the path relative to a directory given, or to a list file's directory (files "
        "outside it, and files given one by one, by their name alone): give the directory "
        f"{shown(common)}, or list the files in a .txt file saved in it:\n" + "\n".join(listed)
    )
