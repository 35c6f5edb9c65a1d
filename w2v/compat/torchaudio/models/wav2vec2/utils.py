"""torchaudio's ``wav2vec2.utils.import_huggingface_model`` / ``import_fairseq_model``, taking
checkpoint paths instead of live ``transformers`` / ``fairseq`` objects (w2v needs neither)."""

from __future__ import annotations

import os
from pathlib import Path

from w2v.compat.torchaudio.models.wav2vec2.model import Wav2Vec2Model, from_w2v
from w2v.config import Regularization
from w2v.convert.files import read_json_object
from w2v.loading import load

# transformers config field → w2v Regularization field (torchaudio's import reads the same)
HF_DROPOUTS = {
    "feat_proj_dropout": "feat_proj_dropout",
    "hidden_dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "layerdrop": "layerdrop",
}


def import_huggingface_model(original: str | os.PathLike) -> Wav2Vec2Model:
    """A Hugging Face model directory (``save_pretrained`` output or a hub snapshot of a
    ``Wav2Vec2Model``, ``Wav2Vec2ForCTC``, ``HubertModel``, ``WavLMModel`` ...) → torchaudio's
    ``Wav2Vec2Model``, a CTC head becoming ``aux``. As in torchaudio, the model comes back
    in train mode with the dropouts and layer drop of the checkpoint's ``config.json``.

    torchaudio takes the loaded ``transformers`` model; this takes its directory (or any
    path or hub id :func:`w2v.load` reads). Raises :class:`w2v.errors.CheckpointError`.
    """
    model = load(original)
    config_path = Path(original) / "config.json"
    if config_path.is_file():
        cfg = read_json_object(config_path, "config")
        fields = {
            mine: float(cfg[theirs])
            for theirs, mine in HF_DROPOUTS.items()
            if isinstance(cfg.get(theirs), (int, float)) and not isinstance(cfg[theirs], bool)
        }
        model.set_regularization(Regularization(**fields))
    return from_w2v(model).train()


def import_fairseq_model(original: str | os.PathLike) -> Wav2Vec2Model:
    """A fairseq wav2vec 2.0 / HuBERT checkpoint (``.pt``: pretrained, or a CTC fine-tune
    whose output projection becomes ``aux``) → torchaudio's ``Wav2Vec2Model``, in train mode
    as torchaudio returns it; its dropouts are 0 (set them with
    ``model.w2v_model.set_regularization``).

    torchaudio takes the loaded fairseq model; this takes the file (read without fairseq
    and without running code from it). Raises :class:`w2v.errors.CheckpointError`.
    """
    return from_w2v(load(original)).train()
