"""Side files of a checkpoint directory, read defensively: JSON of bounded size, and paths
that a file names (shard indexes) kept inside the directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from w2v.errors import CheckpointError, one_line, shown

MAX_JSON_BYTES = 16 << 20
"""Largest JSON side file read (config, index, vocabulary); real ones are under a megabyte."""


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; :class:`CheckpointError` naming it and saying what was
    wrong (unreadable, too large, not JSON, nested too deeply)."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{path}: {what} of {size} bytes is larger than w2v reads ({MAX_JSON_BYTES})"
            )
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot read {what} ({one_line(e, 200)})") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """:func:`read_json` of a file that must hold a JSON object."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, not a {_json_type(data)}")
    return data


def inside(directory: Path, name: Any, index: Path) -> Path:
    """The file ``name`` (as ``index`` names it) within ``directory``; :class:`CheckpointError`
    unless it is a relative path that stays inside, symbolic links followed.

    One link out is allowed: a file of a Hugging Face hub snapshot
    (``.../snapshots/<revision>/``) is a link into the repository's ``blobs/`` folder.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"{index}: shard name {shown(name, 80)} is not a file name")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or "\\" in name:
        raise CheckpointError(
            f"{index}: shard {shown(name)} lies outside the model directory; "
            "shards must be files inside it"
        )
    root = directory.resolve()
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    path = (directory / relative).resolve()
    if not any(path.is_relative_to(r) for r in roots):
        raise CheckpointError(
            f"{index}: shard {shown(name)} is a link to {shown(str(path))}, outside the model "
            "directory; shards must be files inside it"
        )
    if not path.is_file():
        raise CheckpointError(f"{index}: shard {shown(name)} is missing")
    return path


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", type(None): "null", bool: "boolean"}.get(
        type(value), "number"
    )
