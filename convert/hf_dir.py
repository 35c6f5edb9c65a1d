"""Reading a Hugging Face model directory: ``config.json``, the weights (safetensors,
sharded, or ``pytorch_model.bin``), ``preprocessor_config.json`` and the CTC ``vocab.json``.

The conversion itself is the pure :mod:`w2v.convert.hf`. Every file is read
defensively (:mod:`w2v.convert.files`); ``pytorch_model.bin`` goes through the
same allow-list unpickler as fairseq checkpoints; a shard index may only name
files inside the directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from w2v.convert.checkpoint import Checkpoint
from w2v.convert.files import inside, read_json_object
from w2v.convert.hf import config_from_hf, convert_hf_state_dict, split_hf_state_dict
from w2v.convert.outside import unused_notice
from w2v.convert.safe_pickle import load_torch_file

from w2v.config import SAMPLE_RATE, CheckpointInfo
from w2v.errors import CheckpointError, one_line, quoted, shown
from w2v.nn.heads import head_config_from_hf


def read_hf(path: str | Path, *, strict: bool = False) -> Checkpoint:
    """Read a Hugging Face model directory (``save_pretrained`` output or a hub snapshot).

    The head the config names (``architectures[0]``: sequence or frame classification,
    x-vector, the community speech classification) is kept with its weights; other keys
    outside the backbone are kept unused (``Checkpoint.extra``) with a notice, or refused
    when ``strict``. Keys inside the backbone must be exactly the model's either way.
    """
    d = Path(path)
    cfg_path = d / "config.json"
    cfg = read_json_object(cfg_path, "config")
    architectures = cfg.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise CheckpointError(
            f"{cfg_path}: architectures must be a list of class names, got {shown(architectures)}"
        )
    state = read_hf_weights(d)
    ctc = any(a.endswith("ForCTC") for a in architectures) or "lm_head.weight" in state
    try:
        config, family = config_from_hf(cfg, ctc=ctc)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{cfg_path}: {shown(e, 300)}") from None
    notices = []
    try:
        head = head_config_from_hf(cfg)
    except (ValueError, TypeError) as e:
        if strict:
            raise CheckpointError(f"{cfg_path}: head config: {shown(e, 300)}") from None
        notices.append(f"{cfg_path}: the head's config is not usable ({shown(e, 200)})")
        head = None
    parts = split_hf_state_dict(state, config, family, head, strict=strict, source=str(d))
    notices.extend(parts.remarks)
    weights, dropped = convert_hf_state_dict(parts.inner, config, family, source=str(d))
    if dropped:
        heads = sorted({k.split(".")[0] for k in dropped})
        notices.append(
            f"{d}: kept the {family} encoder; dropped {len(dropped)} weights of "
            f"{shown(', '.join(heads))} not used for feature extraction"
        )
    if parts.extra:
        notices.append(unused_notice(str(d), family, parts.extra))
    normalize, pre_notice = _read_normalize(d)
    if pre_notice:
        notices.append(pre_notice)
    name = architectures[0] if architectures else cfg["model_type"]
    return Checkpoint(
        config=config,
        state_dict=weights,
        info=CheckpointInfo(
            family=family,
            normalize=normalize,
            vocab=_read_vocab(d, config.vocab_size),
            source=f"transformers {shown(name, 80)} from {d}",
        ),
        notices=tuple(notices),
        head=parts.head,
        head_state=parts.head_state,
        extra=parts.extra,
    )


def read_hf_weights(d: Path) -> dict[str, torch.Tensor]:
    """Weights from model.safetensors, sharded safetensors, or pytorch_model.bin (allow-list)."""
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
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: all a damaged file
        raise CheckpointError(f"{file}: cannot read weights ({one_line(e, 200)})") from None


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    state = load_torch_file(file)
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a state dict, got a {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{file}: expected a state dict of tensors; {shown(key)} is a "
                f"{type(value).__name__}"
            )
    return state


def _load_sharded(index: Path) -> dict[str, torch.Tensor]:
    data = read_json_object(index, "shard index")
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f"{index}: weight_map must be a JSON object mapping weight names to shard files"
        )
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = inside(index.parent, shard, index)
        if shard.endswith(".safetensors"):
            state.update(_load_safetensors(file))
        elif shard.endswith(".bin"):
            state.update(_load_bin(file))
        else:
            raise CheckpointError(f"{index}: shard {shown(shard)} is neither .safetensors nor .bin")
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(
            f"{index}: keys listed in the index are absent from the shards: "
            f"{shown(', '.join(missing[:5]))}"
        )
    return state


def _read_normalize(d: Path) -> tuple[bool, str | None]:
    pre = d / "preprocessor_config.json"
    if not pre.is_file():
        return False, (
            f"{d}: no preprocessor_config.json; input normalisation is off "
            "(add the file, or set model.normalize, if the model was trained with it)"
        )
    data = read_json_object(pre, "preprocessor config")
    rate = data.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise CheckpointError(
            f"{pre}: sampling_rate {quoted(rate)} is not supported (w2v models take 16 kHz)"
        )
    normalize = data.get("do_normalize", True)
    if not isinstance(normalize, bool):
        raise CheckpointError(f"{pre}: do_normalize must be true or false, got {quoted(normalize)}")
    return normalize, None


def _read_vocab(d: Path, vocab_size: int | None) -> list[str] | None:
    """CTC symbols from the tokenizer's vocab.json, ordered by id, when present and complete."""
    file = d / "vocab.json"
    if vocab_size is None or not file.is_file():
        return None
    vocab: Any = read_json_object(file, "vocabulary")
    if vocab and all(isinstance(v, dict) for v in vocab.values()):
        vocab = next(iter(vocab.values()))  # multilingual tokenizers nest one vocab per language
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in vocab.values()):
        raise CheckpointError(
            f"{file}: a vocabulary must map each token to an integer id (or each language to "
            "such a map)"
        )
    if sorted(vocab.values()) != list(range(len(vocab))) or len(vocab) != vocab_size:
        return None  # not this head's vocabulary: the model is still usable without one
    return [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
