"""w2v's checkpoint directory (``config.json`` + ``model.safetensors``) and the in-memory form."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from w2v.atomic import atomic_write
from w2v.config import CheckpointInfo, Config
from w2v.errors import CheckpointError, one_line

FORMAT = "w2v"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class Checkpoint:
    """A converted checkpoint: architecture, weights in w2v's key names, and what the
    checkpoint says about itself (:class:`~w2v.config.CheckpointInfo`).

    ``notices``: one-line remarks produced while converting (dropped heads).
    """

    config: Config
    state_dict: dict[str, torch.Tensor]
    info: CheckpointInfo = field(default_factory=CheckpointInfo)
    notices: tuple[str, ...] = ()

    def with_source(self, source: str) -> Checkpoint:
        return replace(self, info=replace(self.info, source=source))

    def metadata(self) -> dict[str, Any]:
        """The w2v ``config.json``: format, checkpoint info and architecture."""
        info = self.info
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": info.family,
            "source": info.source,
            "normalize": info.normalize,
            "vocab": None if info.vocab is None else list(info.vocab),
            "config": self.config.to_dict(),
        }


def is_w2v_dir(path: str | os.PathLike) -> bool:
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def save(ckpt: Checkpoint, directory: str | os.PathLike) -> Path:
    """Write ``ckpt`` as a w2v checkpoint directory; each file is written atomically."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.state_dict.items()}
    atomic_write(
        out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})
    )
    text = json.dumps(ckpt.metadata(), indent=2) + "\n"
    atomic_write(out / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return out


def read(directory: str | os.PathLike) -> Checkpoint:
    """Read a w2v checkpoint directory written by :func:`save`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path = d / CONFIG_FILE
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: cannot read w2v config ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a w2v checkpoint config")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format version {meta['format_version']} is newer than this w2v "
            f"understands ({FORMAT_VERSION}); upgrade w2v"
        )
    try:
        config = Config.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid config ({e})") from None
    weights = d / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: cannot read weights ({one_line(e)})") from None
    return Checkpoint(
        config=config,
        state_dict=state,
        info=CheckpointInfo(
            family=meta.get("family", "wav2vec2"),
            normalize=bool(meta.get("normalize", False)),
            vocab=meta.get("vocab"),
            source=meta.get("source", str(d)),
        ),
    )
