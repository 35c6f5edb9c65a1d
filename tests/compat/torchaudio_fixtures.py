"""Reading the torchaudio fixtures (tests/fixtures/make_torchaudio_fixtures.py writes them)."""

from __future__ import annotations

import json
import re
from functools import cache

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from w2v.convert.torchaudio import DROPOUT_ARGS

from tests.helpers import FIXTURES
from w2v.compat.torchaudio import models

DIR = FIXTURES / "torchaudio"
VARIANTS = ("wav2vec2-postln", "wav2vec2-preln", "hubert-preln", "wavlm-postln", "wavlm-preln")
NO_DROPOUT = dict.fromkeys(DROPOUT_ARGS, 0.0)
TRAIN = {**dict.fromkeys(DROPOUT_ARGS, 0.1), "encoder_layer_drop": 0.3}
TRAIN_NO_LAYER_DROP = {**TRAIN, "encoder_layer_drop": 0.0}
TRAIN_SEEDS = (1234, 1235)
FP32 = dict(atol=1e-5, rtol=0)


@cache
def variant(name: str) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(factory name, architecture arguments, tensors) of one fixture."""
    path = DIR / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return meta["factory"], json.loads(meta["arch"]), load_file(str(path))


def torchaudio_state(name: str) -> dict[str, torch.Tensor]:
    """torchaudio's own state_dict() of the fixture model."""
    return {k[6:]: v for k, v in variant(name)[2].items() if k.startswith("state.")}


def compat_model(name: str, dropouts: dict | None = None) -> models.Wav2Vec2Model:
    """The w2v.compat model of the fixture's architecture, torchaudio's weights loaded
    strictly; eval mode."""
    factory, arch, _ = variant(name)
    model = getattr(models, factory)(**arch, **(dropouts or NO_DROPOUT))
    model.load_state_dict(torchaudio_state(name), strict=True)
    return model.eval()


def expand_keys(compact: dict[str, list[int]]) -> dict[str, tuple[int, ...]]:
    """keys.json's compact form ``a.{0-11}.b`` → every key with its shape."""
    out = {}
    for template, shape in compact.items():
        m = re.search(r"\{(\d+)-(\d+)\}", template)
        if m is None:
            out[template] = tuple(shape)
            continue
        for i in range(int(m.group(1)), int(m.group(2)) + 1):
            out[template[: m.start()] + str(i) + template[m.end() :]] = tuple(shape)
    return out


@cache
def api() -> dict:
    return json.loads((DIR / "api.json").read_text(encoding="utf-8"))


@cache
def keys() -> dict:
    return json.loads((DIR / "keys.json").read_text(encoding="utf-8"))
