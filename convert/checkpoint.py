"""w2v's checkpoint directory (``config.json`` + ``model.safetensors``) and the in-memory form."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from w2v.config import Config

FORMAT = "w2v"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or converted; the message names the file and the problem."""


@dataclass
class Checkpoint:
    """A converted checkpoint: architecture, weights in w2v's key names, and metadata.

    ``normalize``: whether inputs should be normalised per utterance to zero
    mean and unit variance before the model (HF ``do_normalize``, fairseq
    ``task.normalize``). ``vocab``: CTC output symbols when known.
    ``notices``: one-line remarks produced while converting (dropped heads).
    """

    config: Config
    state_dict: dict[str, torch.Tensor]
    family: str = "wav2vec2"
    normalize: bool = False
    vocab: list[str] | None = None
    source: str = ""
    notices: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "source": self.source,
            "normalize": self.normalize,
            "vocab": self.vocab,
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
    _atomic_write(
        out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})
    )
    text = json.dumps(ckpt.metadata(), indent=2) + "\n"
    _atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(text))
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
        raise CheckpointError(f"{weights}: cannot read weights ({_one_line(e)})") from None
    return Checkpoint(
        config=config,
        state_dict=state,
        family=meta.get("family", "wav2vec2"),
        normalize=bool(meta.get("normalize", False)),
        vocab=meta.get("vocab"),
        source=meta.get("source", str(d)),
    )


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
