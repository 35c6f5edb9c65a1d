"""Hugging Face hub ids → converted w2v checkpoint directories, downloaded and converted once.

``resolve_hub("facebook/wav2vec2-base")`` downloads only what conversion
needs (configs and weights) with ``huggingface_hub.snapshot_download``,
converts it with :func:`w2v.convert.load.read_checkpoint`, and saves the result
under the cache: ``$W2V_CACHE`` if set, else ``~/.cache/w2v``, in a folder
named after the id with ``/`` replaced by ``--``. Later calls return the
cached directory without touching the network.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from w2v.convert import checkpoint
from w2v.convert.load import read_checkpoint
from w2v.errors import CheckpointError, HubError

ALLOW_PATTERNS = [
    "config.json",
    "preprocessor_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model.bin*",
]

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
"""The form of a hub id, ``org/name``; see :func:`is_hub_id` for when a string is read as one."""


def is_hub_id(model: str | os.PathLike) -> bool:
    """Whether ``model`` is read as a hub id rather than a local path.

    It is when it is a string of the form ``org/name`` (:data:`HUB_ID`), nothing
    exists at that path, ``org`` is not an existing local directory (then
    ``models/nope`` is a mistyped path, not a model on the hub), and it does not
    end in ``.pt`` (a fairseq checkpoint file). Anything else is a path; write
    ``./org/name`` to force that reading.
    """
    if not isinstance(model, str) or not HUB_ID.match(model) or os.path.lexists(model):
        return False
    return not os.path.isdir(model.split("/", 1)[0]) and not model.endswith(".pt")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted hub checkpoints live: ``cache_dir``, ``$W2V_CACHE`` or ``~/.cache/w2v``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("W2V_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "w2v"


def cache_path(model_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted checkpoint directory for ``model_id`` (it may not exist yet)."""
    return cache_root(cache_dir) / model_id.replace("/", "--")


def resolve_hub(model_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A converted w2v checkpoint directory for the hub id ``model_id`` (``org/name``).

    Downloads and converts on first use; returns the cached copy afterwards.
    Raises :class:`HubError` with what to do when ``huggingface_hub`` is
    missing, the download fails (offline, unknown id), or conversion fails.
    """
    if not HUB_ID.match(model_id):
        raise HubError(
            f"{model_id!r} is neither an existing path nor a hub id of the form org/name"
        )
    target = cache_path(model_id, cache_dir)
    # an entry an older w2v wrote (an older format: e.g. without a fine-tuned head) is
    # converted again
    current = checkpoint.format_version(target) == checkpoint.FORMAT_VERSION
    if current and (target / checkpoint.WEIGHTS_FILE).is_file():
        return target
    offline_help = (
        f"download {model_id} elsewhere (e.g. `huggingface-cli download {model_id}` or `git clone "
        f"https://huggingface.co/{model_id}`), convert it with `w2v convert LOCAL_DIR OUT_DIR`, and "
        "pass OUT_DIR as the model"
    )
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(
            f"{model_id!r} is not a local path, and fetching it from the Hugging Face hub needs "
            f"huggingface_hub (pip install huggingface_hub); or {offline_help}"
        ) from None
    try:
        snapshot = huggingface_hub.snapshot_download(
            repo_id=model_id, allow_patterns=ALLOW_PATTERNS
        )
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, HTTP errors: all the same advice
        reason = " ".join(str(e).split()) or type(e).__name__
        raise HubError(
            f"{model_id!r} is not a local path, and cannot be downloaded from the Hugging Face "
            f"hub ({type(e).__name__}: {reason[:300]}); if you are offline, {offline_help}"
        ) from None
    return _convert(Path(snapshot), model_id, target)


def _convert(snapshot: Path, model_id: str, target: Path) -> Path:
    try:
        ckpt = read_checkpoint(snapshot)
    except CheckpointError as e:
        raise HubError(f"cannot convert {model_id!r} downloaded from the hub: {e}") from None
    ckpt = ckpt.with_source(model_id)
    # convert into a sibling, then rename: a killed or concurrent conversion never
    # leaves a half-written cache entry under the final name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as e:
        raise HubError(
            f"cannot write to the w2v cache {target.parent} ({e}); set W2V_CACHE"
        ) from None
    try:
        checkpoint.save(ckpt, tmp)
        if target.exists():
            shutil.rmtree(target)  # an incomplete entry from an older run
        os.replace(tmp, target)
    except (OSError, CheckpointError) as e:  # save() reports a full disk as CheckpointError
        shutil.rmtree(tmp, ignore_errors=True)
        if checkpoint.is_w2v_dir(target):  # another process finished first
            return target
        raise HubError(
            f"cannot write the converted {model_id!r} to {target} ({e}); "
            "set W2V_CACHE to a writable directory"
        ) from None
    return target
