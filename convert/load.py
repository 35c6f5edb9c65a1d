"""Find out what kind of checkpoint a path is and read it into a :class:`Checkpoint`."""

from __future__ import annotations

import os
from pathlib import Path

from w2v.convert import checkpoint
from w2v.convert.checkpoint import Checkpoint
from w2v.convert.fairseq_file import read_fairseq
from w2v.convert.files import is_torchaudio_file
from w2v.convert.hf_dir import read_hf
from w2v.convert.keys import check_shared
from w2v.convert.safe_pickle import load_torch_file
from w2v.convert.torchaudio import (
    bundle_for_file,
    config_from_torchaudio,
    convert_torchaudio_state_dict,
    infer_torchaudio_params,
    is_torchaudio_state,
    remove_aux_rows,
)

from w2v.config import CheckpointInfo
from w2v.errors import CheckpointError, shown


def read_checkpoint(
    path: str | os.PathLike, *, strict: bool = False, arch: str | None = None
) -> Checkpoint:
    """Read a w2v directory, a Hugging Face model directory, a fairseq ``.pt`` file, or a
    torchaudio ``Wav2Vec2Model`` state dict (``.pth``, see :func:`read_torchaudio`).

    A task head w2v runs is kept (``Checkpoint.head``); other weights outside the backbone
    are kept unused (``Checkpoint.extra``) with a notice, or refused when ``strict``. Keys
    inside the backbone that are unknown or missing are errors either way. ``arch``: a
    torchaudio preset name fixing a torchaudio file's architecture. Raises
    :class:`CheckpointError` with a one-line message naming the file.
    """
    p = Path(path)
    if p.is_file():
        if is_torchaudio_file(p):
            return read_torchaudio(p, load_torch_file(p), arch=arch)
        if arch is None:
            return read_fairseq(p, strict=strict)
        # a file whose kind the cheap look could not tell (the legacy format): read it whole
        state = load_torch_file(p)
        if is_torchaudio_state(state):
            return read_torchaudio(p, state, arch=arch)
        raise CheckpointError(f"{p}: an architecture name is for torchaudio state dicts only")
    if p.is_dir():
        if checkpoint.is_w2v_dir(p):
            return checkpoint.read(p, strict=strict)
        if (p / "config.json").is_file():
            return read_hf(p, strict=strict)
        raise CheckpointError(
            f"{p}: directory holds no config.json; expected a w2v checkpoint directory "
            "(from `w2v convert`) or a Hugging Face model directory"
        )
    if arch is not None:
        raise CheckpointError(f"{p}: an architecture name is for torchaudio state dicts only")
    raise CheckpointError(f"{p}: no such file or directory")


def read_torchaudio(path: Path, state: object, *, arch: str | None = None) -> Checkpoint:
    """A torchaudio ``Wav2Vec2Model`` state dict read from ``path`` → :class:`Checkpoint`.

    A file named as one of torchaudio's pipeline bundles names it
    (``wav2vec2_fairseq_base_ls960_asr_ls960.pth``) gets that bundle's architecture,
    labels (the CTC vocabulary, blank ``-`` first) and input normalisation, its extra
    ``aux`` rows dropped as torchaudio's pipeline drops them. Any other file's architecture
    is read from its shapes and key names (:func:`w2v.convert.torchaudio.infer_torchaudio_params`),
    or fixed by ``arch``, a torchaudio preset name.
    """
    if not is_torchaudio_state(state) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path}: not a torchaudio Wav2Vec2Model state dict")
    source = str(path)
    check_shared(state, source)  # before any row is copied out of a view
    bundle = None if arch is not None else bundle_for_file(path.name)
    notices = []
    if bundle is not None:
        name, info = bundle
        model_type, family, params = info.model_type, info.family, info.params
        vocab = None if info.labels is None else ("-", *info.labels)
        if info.remove_aux_axis and "aux.weight" in state:
            state = remove_aux_rows(state, info.remove_aux_axis, source)
            notices.append(
                f"{path}: dropped rows {', '.join(map(str, info.remove_aux_axis))} of aux "
                f"(fairseq dictionary specials), as torchaudio's {name} does"
            )
        normalize, what = info.normalize, f"torchaudio {name}"
    else:
        model_type, family, params = infer_torchaudio_params(state, arch, source)
        if arch is None and "hubert" in path.name.lower():
            family = "hubert"  # the weights cannot tell HuBERT from wav2vec 2.0
        vocab, normalize = None, False
        what = f"torchaudio {arch or model_type}"
    try:
        config = config_from_torchaudio(params, model_type)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: {shown(e, 300)}") from None
    weights = convert_torchaudio_state_dict(state, config, source)
    return Checkpoint(
        config=config,
        state_dict=weights,
        info=CheckpointInfo(
            family=family, normalize=normalize, vocab=vocab, source=f"{what} from {path}"
        ),
        notices=tuple(notices),
    )
