"""Atomic file writes: a killed process leaves either the old file or the new one, never a
torn one.

A file is written under a temporary name in its own directory (``.NAME.*`` +
:data:`TMP_SUFFIX`) and moved into place with ``os.replace``, which is atomic
within one file system. Temporaries a killed run left behind are found by
their suffix (:func:`remove_stale_temporaries`).

Permissions: the temporary is created with mode ``0o666`` filtered by the
process umask, so the file that lands is the one ``open(path, "w")`` would
have made (0644 under umask 022, 0600 under 077), not ``mkstemp``'s 0600; a
writer that puts a file of its own at the temporary name gets the same mode.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".w2vtmp"

_NAME_MAX = 255
"""Longest file name, in bytes, on the usual file systems (ext4, xfs, btrfs, tmpfs)."""

_NEW_FILE_MODE = 0o666
"""Mode a new file asks for; the kernel removes the umask's bits, as for any new file."""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Create ``path`` by ``write(tmp)``, which writes the whole content to the path ``tmp``;
    then rename ``tmp`` to ``path``. On any failure ``tmp`` is removed and ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temporary(path)
    try:
        write(tmp)
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:  # the writer made a file of its own
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new empty file ``.NAME.<random>`` + :data:`TMP_SUFFIX` beside ``path``, created
    exclusively with the umask applied (unlike ``mkstemp``, which always makes 0600), and
    the permission bits it got."""
    # the name as a prefix helps a person see what a leftover temporary was; a name near
    # the file system's 255-byte limit gets a short temporary name instead
    prefix = path.name if len(os.fsencode(path.name)) <= _NAME_MAX - 32 else "w2v"
    for _ in range(100):
        tmp = path.parent / f".{prefix}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise FileExistsError(f"no free temporary name beside {path}")


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
