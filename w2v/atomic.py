"""Atomic file writes: a killed process leaves either the old file or the new one, never a
torn one.

A file is written under a temporary name in its own directory (``.NAME.*`` +
:data:`TMP_SUFFIX`) and moved into place with ``os.replace``, which is atomic
within one file system. Temporaries a killed run left behind are found by
their suffix (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".w2vtmp"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Create ``path`` by ``write(tmp)``, which writes the whole content to the path ``tmp``;
    then rename ``tmp`` to ``path``. On any failure ``tmp`` is removed and ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_file(
    path: str | os.PathLike, write: Callable[[IO[Any]], Any], *, binary: bool = True
) -> Path:
    """:func:`atomic_write` through an open file object (binary, or UTF-8 text)."""

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as f:
            write(f)

    return atomic_write(path, to_file)


def remove_stale_temporaries(directories: Iterable[Path]) -> int:
    """Delete temporary files a killed run left in ``directories``; returns how many."""
    removed = 0
    for d in directories:
        if not d.is_dir():
            continue
        for p in d.glob(f".*{TMP_SUFFIX}"):
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass
    return removed
