"""Reading a fairseq ``.pt`` checkpoint: the pickle, its config sections and the target dictionary.

Read without fairseq and without running code from the file: the pickle goes
through :mod:`w2v.convert.safe_pickle`'s allow-list. Layouts understood:

* new-style ``cfg`` (omegaconf ``DictConfig`` or plain dicts) with ``model`` and
  ``task`` sections; legacy ``args`` (``argparse.Namespace``);
* pretraining checkpoints of ``wav2vec2``, ``hubert`` and ``data2vec_audio``;
* CTC fine-tunes (``wav2vec_ctc``, ``hubert_ctc``) with the pretraining config
  in ``w2v_args``; the target dictionary's symbols become the vocabulary when
  ``task_state`` holds it.

The conversion itself is the pure :mod:`w2v.convert.fairseq`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from w2v.convert.checkpoint import Checkpoint
from w2v.convert.fairseq import (
    CTC_MODELS,
    config_from_fairseq,
    convert_fairseq_state_dict,
    model_name,
    split_fairseq_state_dict,
)
from w2v.convert.outside import unused_notice
from w2v.convert.safe_pickle import Record, load_torch_file, to_plain

from w2v.config import CheckpointInfo
from w2v.errors import CheckpointError


def read_fairseq(path: str | os.PathLike, *, strict: bool = False) -> Checkpoint:
    """Read a fairseq ``.pt`` checkpoint into a :class:`Checkpoint` (weights in w2v's names).

    Keys outside the encoder that w2v does not know are kept unused (``Checkpoint.extra``)
    with a notice, or refused when ``strict``; inside it every key must be known.

    Raises :class:`CheckpointError` with a one-line message naming the file.
    """
    p = Path(path)
    obj = load_torch_file(p)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(
            f"{p}: not a fairseq checkpoint (expected a dict with a 'model' state dict); "
            "w2v reads fairseq .pt files, w2v checkpoint directories and Hugging Face directories"
        )
    model_cfg, task_cfg = _sections(obj, p)
    ctc = model_name(model_cfg) in CTC_MODELS
    if ctc:
        w2v_args = model_cfg.get("w2v_args")
        if not isinstance(w2v_args, dict):
            raise CheckpointError(
                f"{p}: fine-tuned checkpoint without its pretraining config (w2v_args); "
                "it cannot be read without the pretrained checkpoint it names"
            )
        encoder_cfg = w2v_args.get("model", w2v_args)
        encoder_task = w2v_args.get("task", w2v_args)
        if not isinstance(encoder_cfg, dict):
            raise CheckpointError(f"{p}: w2v_args.model is not a config section")
    else:  # a pretraining checkpoint; config_from_fairseq refuses other models
        encoder_cfg, encoder_task = model_cfg, task_cfg
    try:
        config, family = config_from_fairseq(encoder_cfg)
    except CheckpointError as e:
        raise CheckpointError(f"{p}: {e}") from None

    state = {k: v for k, v in obj["model"].items()}
    vocab = None
    if ctc:
        head = state.get("w2v_encoder.proj.weight")
        if not isinstance(head, torch.Tensor) or head.dim() != 2:
            raise CheckpointError(
                f"{p}: CTC checkpoint has no w2v_encoder.proj.weight (the output projection)"
            )
        try:
            config = replace(config, vocab_size=int(head.shape[0]))
        except ValueError as e:
            raise CheckpointError(f"{p}: CTC head w2v_encoder.proj.weight: {e}") from None
        vocab = _target_symbols(obj.get("task_state"))
    parts = split_fairseq_state_dict(state, config, strict=strict, source=str(p))
    state, notices = convert_fairseq_state_dict(parts.inner, config, source=str(p))
    if parts.extra:
        notices.append(unused_notice(str(p), family, parts.extra))
    if vocab is not None and len(vocab) != config.vocab_size:
        notices.append(
            f"{p}: target dictionary has {len(vocab)} symbols but the CTC head has "
            f"{config.vocab_size} outputs; vocabulary not kept"
        )
        vocab = None
    normalize = _flag(task_cfg, "normalize")
    if normalize is None and ctc:
        normalize = _flag(encoder_task, "normalize")
    return Checkpoint(
        config=config,
        state_dict=state,
        info=CheckpointInfo(family=family, normalize=bool(normalize), vocab=vocab, source=str(p)),
        notices=tuple(notices),
        extra=parts.extra,
    )


def _sections(obj: dict, p: Path) -> tuple[dict, dict]:
    """(model config, task config) as plain dicts from ``cfg`` or legacy ``args``."""
    cfg, args = obj.get("cfg"), obj.get("args")
    try:
        cfg = to_plain(cfg) if cfg is not None else None
        args = to_plain(args) if args is not None else None
    except ValueError as e:
        raise CheckpointError(f"{p}: unreadable config ({e})") from None
    if cfg is not None:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise CheckpointError(f"{p}: the checkpoint's cfg has no model section")
        task = cfg.get("task")
        return cfg["model"], task if isinstance(task, dict) else {}
    if args is not None:
        if not isinstance(args, dict):
            raise CheckpointError(f"{p}: the checkpoint's args are not an argparse.Namespace")
        return args, args
    raise CheckpointError(
        f"{p}: the checkpoint has neither cfg nor args, so its architecture is unknown"
    )


def _flag(section: Any, key: str) -> bool | None:
    value = section.get(key) if isinstance(section, dict) else None
    if isinstance(value, str):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, (bool, int, float)):
        return bool(value)
    return None  # absent, or not a flag at all


def _target_symbols(task_state: Any) -> list[str] | None:
    """Symbols of ``task_state["target_dictionary"]`` (a fairseq Dictionary), if present."""
    if not isinstance(task_state, dict):
        return None
    d = task_state.get("target_dictionary")
    state = Record.state_dict(d) if isinstance(d, Record) else d if isinstance(d, dict) else None
    symbols = state.get("symbols") if state else None
    if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols):
        return list(symbols)
    return None
