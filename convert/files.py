"""Side files of a checkpoint directory, read defensively: JSON of bounded size, and paths
that a file names (shard indexes) kept inside the directory."""

from __future__ import annotations

import json
import pickletools
import zipfile
from pathlib import Path
from typing import Any

from w2v.errors import CheckpointError, one_line, shown

MAX_PICKLE_BYTES = 64 << 20
"""Largest ``data.pkl`` :func:`is_torchaudio_file` looks into (a model's is under a megabyte)."""

TORCHAUDIO_KEY = "encoder.feature_projection.projection.weight"
"""A key only torchaudio's wav2vec2-family state dicts hold (HF and fairseq name it otherwise)."""

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


def is_torchaudio_file(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save`` zip file whose pickle names torchaudio's
    projection key: a look at the pickle's opcodes (nothing is run, no tensor is read) that
    tells a torchaudio ``.pth`` from a fairseq ``.pt`` before the file is read whole. False
    for anything else, the legacy (non-zip) format included."""
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [i for i in z.infolist() if i.filename.endswith("/data.pkl")]
            if len(pickles) != 1 or pickles[0].file_size > MAX_PICKLE_BYTES:
                return False
            data = z.read(pickles[0])
        return any(arg == TORCHAUDIO_KEY for _, arg, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - a damaged file can fail in many ways; the full read says how
        return False
