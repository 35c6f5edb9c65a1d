"""Reading a Hugging Face model directory: ``config.json``, the weights (safetensors,
sharded, or ``pytorch_model.bin``), ``preprocessor_config.json`` and the CTC ``vocab.json``.

The conversion itself is the pure :mod:`w2v.convert.hf`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from w2v.convert.checkpoint import Checkpoint
from w2v.convert.hf import config_from_hf, convert_hf_state_dict

from w2v.config import SAMPLE_RATE, CheckpointInfo
from w2v.errors import CheckpointError, one_line


def read_hf(path: str | Path) -> Checkpoint:
    """Read a Hugging Face model directory (``save_pretrained`` output or a hub snapshot)."""
    d = Path(path)
    cfg_path = d / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: cannot read config ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object")
    architectures = cfg.get("architectures") or []
    state = read_hf_weights(d)
    ctc = any(a.endswith("ForCTC") for a in architectures) or "lm_head.weight" in state
    try:
        config, family = config_from_hf(cfg, ctc=ctc)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    weights, dropped = convert_hf_state_dict(state, config, family, source=str(d))
    notices = []
    if dropped:
        heads = sorted({k.split(".")[0] for k in dropped})
        notices.append(
            f"{d}: kept the {family} encoder; dropped {len(dropped)} weights of "
            f"{', '.join(heads)} not used for feature extraction"
        )
    normalize, pre_notice = _read_normalize(d)
    if pre_notice:
        notices.append(pre_notice)
    return Checkpoint(
        config=config,
        state_dict=weights,
        info=CheckpointInfo(
            family=family,
            normalize=normalize,
            vocab=_read_vocab(d, config.vocab_size),
            source=f"transformers {architectures[0] if architectures else cfg['model_type']} from {d}",
        ),
        notices=tuple(notices),
    )


def read_hf_weights(d: Path) -> dict[str, torch.Tensor]:
    """Weights from model.safetensors, sharded safetensors, or pytorch_model.bin (weights_only)."""
    candidates = [
        (d / "model.safetensors", _load_safetensors),
        (d / "model.safetensors.index.json", _load_sharded),
        (d / "pytorch_model.bin", _load_bin),
        (d / "pytorch_model.bin.index.json", _load_sharded),
    ]
    for file, loader in candidates:
        if file.is_file():
            return loader(file)
    raise CheckpointError(
        f"{d}: no weights found (expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin)"
    )


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: cannot read weights ({one_line(e)})") from None


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{file}: cannot read weights ({one_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a state dict, got {type(state).__name__}")
    return state


def _load_sharded(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: cannot read shard index ({one_line(e)})") from None
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = index.parent / shard
        if not file.is_file():
            raise CheckpointError(f"{index}: shard {shard} is missing")
        loader = _load_safetensors if shard.endswith(".safetensors") else _load_bin
        state.update(loader(file))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(
            f"{index}: keys listed in the index are absent from the shards: {', '.join(missing[:5])}"
        )
    return state


def _read_normalize(d: Path) -> tuple[bool, str | None]:
    pre = d / "preprocessor_config.json"
    if not pre.is_file():
        return False, (
            f"{d}: no preprocessor_config.json; input normalisation is off "
            "(add the file, or set model.normalize, if the model was trained with it)"
        )
    try:
        data = json.loads(pre.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{pre}: cannot read ({one_line(e)})") from None
    rate = data.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise CheckpointError(
            f"{pre}: sampling_rate {rate} is not supported (w2v models take 16 kHz)"
        )
    return bool(data.get("do_normalize", True)), None


def _read_vocab(d: Path, vocab_size: int | None) -> list[str] | None:
    """CTC symbols from the tokenizer's vocab.json, ordered by id, when present and complete."""
    file = d / "vocab.json"
    if vocab_size is None or not file.is_file():
        return None
    try:
        vocab = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
        vocab = next(iter(vocab.values()))  # multilingual tokenizers nest one vocab per language
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        return None
    if len(vocab) != vocab_size:
        return None
    return [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
