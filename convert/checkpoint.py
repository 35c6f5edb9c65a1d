"""w2v's checkpoint directory (``config.json`` + ``model.safetensors``) and the in-memory form.

Reading checks everything ``config.json`` says (format, version, architecture,
family, vocabulary) and that the weights are exactly those of the model the
config describes, so a directory whose config and weights disagree fails here,
with the file named, rather than later when the model is built.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from w2v.convert.files import read_json_object
from w2v.convert.keys import check_state

from w2v.atomic import atomic_write
from w2v.config import CheckpointInfo, Config
from w2v.errors import CheckpointError, one_line, quoted, shown

FORMAT = "w2v"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FAMILIES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm")


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
        return read_json_object(cfg, "config").get("format") == FORMAT
    except CheckpointError:
        return False


def save(ckpt: Checkpoint, directory: str | os.PathLike) -> Path:
    """Write ``ckpt`` as a w2v checkpoint directory; each file is written atomically.

    Raises :class:`CheckpointError` naming the directory when it cannot be written
    (no space left, no permission); no partial file is left under a final name.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    out = Path(directory)
    tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.state_dict.items()}
    text = json.dumps(ckpt.metadata(), indent=2) + "\n"
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(
            out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})
        )
        atomic_write(out / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{out}: cannot write the checkpoint ({one_line(e, 200)})") from None
    return out


def read(directory: str | os.PathLike) -> Checkpoint:
    """Read a w2v checkpoint directory written by :func:`save`."""
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path = d / CONFIG_FILE
    meta = read_json_object(cfg_path, "w2v config")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a w2v checkpoint config")
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format version {version} is newer than this w2v "
            f"understands ({FORMAT_VERSION}); upgrade w2v"
        )
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise CheckpointError(
            f"{cfg_path}: unknown format_version {quoted(version)} (this w2v writes "
            f"{FORMAT_VERSION})"
        )
    try:
        config = Config.from_dict(meta.get("config"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid config ({shown(e, 300)})") from None
    info = _info(meta, config, cfg_path, default_source=str(d))
    weights = d / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file is missing")
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: all a damaged file
        raise CheckpointError(f"{weights}: cannot read weights ({one_line(e, 200)})") from None
    check_state(state, config, str(weights))
    return Checkpoint(config=config, state_dict=state, info=info)


def _info(
    meta: dict[str, Any], config: Config, cfg_path: Path, default_source: str
) -> CheckpointInfo:
    """The :class:`CheckpointInfo` ``config.json`` describes, each field checked."""
    family = meta.get("family", "wav2vec2")
    if family not in FAMILIES:
        raise CheckpointError(
            f"{cfg_path}: unknown family {quoted(family)}; expected one of {', '.join(FAMILIES)}"
        )
    normalize = meta.get("normalize", False)
    if not isinstance(normalize, bool):
        raise CheckpointError(f"{cfg_path}: normalize must be true or false")
    vocab = meta.get("vocab")
    if vocab is not None and not (
        isinstance(vocab, list)
        and all(isinstance(s, str) for s in vocab)
        and len(vocab) == config.vocab_size
    ):
        raise CheckpointError(
            f"{cfg_path}: vocab must be a list of {config.vocab_size} strings (the CTC head's "
            "outputs) or null"
        )
    source = meta.get("source", default_source)
    if not isinstance(source, str):
        raise CheckpointError(f"{cfg_path}: source must be a string")
    return CheckpointInfo(family=family, normalize=normalize, vocab=vocab, source=source)
