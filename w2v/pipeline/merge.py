"""Shard manifests and ``w2v merge``: the shards of a run → the run's one manifest.

A shard writes ``DIR/manifest.shard-00003-of-00016.jsonl`` (the entries of exactly its
inputs, in the same schema as ``manifest.jsonl``) and holds ``DIR/.w2v-embed.shard-...lock``
while it runs. :func:`merge_shards` checks that one complete set of shard manifests is there
(every index of one count, each input in one shard, the same settings in all) and writes
their entries as ``DIR/manifest.jsonl`` (:data:`~w2v.pipeline.outputs.MANIFEST`), sorted by
path, as a single run writes it; otherwise it refuses with one line naming the files. The
shard manifests stay: they record which shard did what, and let a shard resume.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2v.errors import UsageError, shown
from w2v.pipeline.outputs import (
    LOCK,
    MANIFEST,
    SETTINGS,
    OutputLock,
    held_setting,
    read_manifest,
    write_manifest,
)
from w2v.pipeline.shards import Shard

_SHARD_MANIFEST = re.compile(r"manifest\.shard-(\d{5,})-of-(\d{5,})(\.journal)?\.jsonl")
_JOURNAL = ".journal.jsonl"
_SHOWN = 5
"""File or input names listed in a refusal before "... and N more"."""


def shard_manifest_name(shard: Shard) -> str:
    """``manifest.shard-00003-of-00016.jsonl``."""
    return f"manifest.{shard.name}.jsonl"


def shard_journal_name(shard: Shard) -> str:
    """``manifest.shard-00003-of-00016.journal.jsonl``: the entries a running shard appends
    one by one; replaced by its manifest when the shard is done, left behind when it is
    killed (and read again when it resumes)."""
    return f"manifest.{shard.name}{_JOURNAL}"


def shard_lock_name(shard: Shard) -> str:
    """``.w2v-embed.shard-00003-of-00016.lock``: held by the process running that shard."""
    return f"{LOCK.removesuffix('.lock')}.{shard.name}.lock"


def shard_manifests(
    out_dir: str | os.PathLike, journals: bool = False
) -> list[tuple[int, int, str]]:
    """``(index, count, file name)`` of every shard manifest in DIR (``journals``: of every
    shard journal too), sorted."""
    found = []
    for name in os.listdir(out_dir):
        m = _SHARD_MANIFEST.fullmatch(name)
        if m and (journals or not m.group(3)):
            found.append((int(m.group(1)), int(m.group(2)), name))
    return sorted(found, key=lambda f: (f[1], f[0], f[2]))


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(shown(n, 300) for n in names[:_SHOWN]) + more


def merge_shards(
    out_dir: str | os.PathLike,
    notice: Callable[[str], None] | None = None,
    lock: bool = True,
) -> tuple[Path, int, int]:
    """Write ``DIR/manifest.jsonl`` from DIR's shard manifests; returns ``(its path, entries,
    shards)``. ``lock``: hold DIR's lock meanwhile, so that no run is writing there (rank 0
    of a torchrun job merges under the lock its run already holds).

    :class:`UsageError`, naming the files or inputs, when DIR holds no shard manifest,
    shard manifests of more than one shard count, not every shard of the count, an input in
    more than one shard, or entries of other settings than the first shard's.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise UsageError(f"{shown(str(out))} is not a directory")
    if not lock:
        return _merge(out, notice)
    with OutputLock(out):
        return _merge(out, notice)


def _merge(out: Path, notice: Callable[[str], None] | None) -> tuple[Path, int, int]:
    unfinished = [n for _, _, n in shard_manifests(out, journals=True) if n.endswith(_JOURNAL)]
    if unfinished:
        raise UsageError(
            f"{shown(str(out))}: {len(unfinished)} shard(s) did not finish (their journals "
            f"{_listed(unfinished)} are there); run those shards again, then merge"
        )
    found = shard_manifests(out)
    if not found:
        raise UsageError(
            f"{shown(str(out))} holds no shard manifests (manifest.shard-NNNNN-of-NNNNN.jsonl) "
            "to merge"
        )
    counts = sorted({count for _, count, _ in found})
    if len(counts) > 1:
        sets = "; ".join(
            f"{count} shards: {_listed([n for _, c, n in found if c == count])}" for count in counts
        )
        raise UsageError(
            f"{shown(str(out))} holds shard manifests of {len(counts)} different shard counts "
            f"({sets}); remove the set you do not want, then merge again"
        )
    count = counts[0]
    have = {index for index, _, _ in found}
    missing = [shard_manifest_name(Shard(i, count)) for i in range(count) if i not in have]
    if missing:
        raise UsageError(
            f"{shown(str(out))}: {len(missing)} of {count} shard manifest(s) missing "
            f"({_listed(missing)}); run those shards (or let them finish), then merge again"
        )
    merged: dict[str, dict[str, Any]] = {}
    owner: dict[str, str] = {}
    duplicates: list[str] = []
    reference: tuple[str, dict[str, Any]] | None = None
    for _, _, name in found:
        for path, entry in read_manifest(out, notice=notice, name=name).items():
            if path in owner:
                duplicates.append(f"{shown(path, 80)} in {owner[path]} and {name}")
                continue
            settings = {k: held_setting(entry, k) for k in SETTINGS}
            if reference is None:
                reference = (name, settings)
            elif settings != reference[1]:
                differ = [k for k in SETTINGS if settings[k] != reference[1][k]]
                raise UsageError(
                    f"{name} and {reference[0]} in {shown(str(out))} were made with different "
                    f"settings ({', '.join(differ)}); rerun the odd shard with the settings of "
                    "the others, then merge again"
                )
            owner[path] = name
            merged[path] = entry
    if duplicates:
        raise UsageError(
            f"{len(duplicates)} input(s) are in more than one shard manifest of "
            f"{shown(str(out))} ({_listed(duplicates)}): the shards were made from different "
            "input lists; rerun every shard with the same inputs, then merge again"
        )
    path = write_manifest(out, merged, MANIFEST)
    return path, len(merged), count
