"""Shared pieces of the training tests: a tiny transformers model and w2v's copy of it."""

from __future__ import annotations

import torch
from w2v.convert.hf import config_from_hf, convert_hf_state_dict

from tests.helpers import hf_class, perturb_
from w2v.nn.model import Model


def w2v_copy(hf_model, family: str = "wav2vec2") -> Model:
    """w2v's model with the weights of a transformers base model (``*Model``)."""
    config, _ = config_from_hf(hf_model.config.to_dict())
    state, _ = convert_hf_state_dict(hf_model.state_dict(), config, family)
    ours = Model(config)
    ours.load_state_dict(state, strict=True)
    return ours


def hf_base(family: str = "wav2vec2", seed: int = 0, **overrides):
    """A tiny random-init transformers base model with non-trivial weights (eval mode)."""
    from tests.helpers import hf_config

    torch.manual_seed(seed)
    return perturb_(hf_class(family)(hf_config(family, **overrides)))
