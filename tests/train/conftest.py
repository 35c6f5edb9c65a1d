"""Shared pieces of the training tests: a tiny transformers model and w2v's copy of it,
and the devices the parity checks run on (the CPU, and a CUDA GPU where one is visible)."""

from __future__ import annotations

import pytest
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


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    """The device both sides run on. On a GPU TF32 is off on both sides (cuDNN's default
    turns it on for convolutions), so that each side is an fp32 computation."""
    if request.param == "cpu":
        yield torch.device("cpu")
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
