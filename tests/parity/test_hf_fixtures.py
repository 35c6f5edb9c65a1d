"""Committed tiny transformers checkpoints load with ``w2v.load`` and match, layer by layer.

The fixtures and their reference outputs come from
``python -m tests.fixtures.make_hf_fixtures``; nothing here imports transformers.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import w2v
from tests.helpers import HF_FIXTURES, assert_layers_close

ATOL = {torch.float32: 1e-5}
DTYPE = torch.float32

NAMES = sorted(p.name for p in HF_FIXTURES.iterdir() if (p / "config.json").is_file())


def _reference_inputs(name: str) -> set[str]:
    with safe_open(str(HF_FIXTURES / name / "reference.safetensors"), "pt") as f:
        return {k.split(".")[0] for k in f.keys()}


REFERENCE_INPUTS = {name: _reference_inputs(name) for name in NAMES}
UNBATCHED = [(n, i) for n in NAMES for i in ("single", "long") if i in REFERENCE_INPUTS[n]]
BATCHED = [n for n in NAMES if "batch" in REFERENCE_INPUTS[n]]


def test_fixture_set_is_complete():
    expected = {
        "wav2vec2-group", "wav2vec2-layer", "wav2vec2-ctc", "hubert", "hubert-bn",
        "data2vec-audio", "wavlm-base", "wavlm-large", "wavlm-ctc",
    }  # fmt: skip
    assert expected <= set(NAMES), "run python -m tests.fixtures.make_hf_fixtures"


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    raw = load_file(str(HF_FIXTURES / "inputs.safetensors"))
    # 16-bit PCM: dividing by 32768 is exact in float32
    return {k: v / 32768.0 if v.dtype == torch.int16 else v for k, v in raw.items()}


def load_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no preprocessor_config.json" notices
        return w2v.load(path)


@functools.cache
def loaded(name: str):
    """(directory, model, reference tensors, reference metadata), loaded once per name."""
    d = HF_FIXTURES / name
    with safe_open(str(d / "reference.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["reference"])
    return d, load_quietly(d), load_file(str(d / "reference.safetensors")), meta


def reference(refs: dict[str, torch.Tensor], name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    n = sum(k.startswith(f"{name}.hidden_states.") for k in refs)
    return [refs[f"{name}.hidden_states.{i}"] for i in range(n)], refs[f"{name}.output"]


@torch.inference_mode()
@pytest.mark.parametrize(("fixture", "name"), UNBATCHED, ids=[f"{f}-{i}" for f, i in UNBATCHED])
def test_unbatched_every_layer(fixture, inputs, name):
    d, model, refs, meta = loaded(fixture)
    x = inputs[name]
    ref_states, ref_out = reference(refs, name)
    assert len(ref_states) == model.config.num_layers + 1

    states, frame_lengths = model.hidden_states(x)
    assert frame_lengths is None
    assert_layers_close(states, ref_states, ATOL[DTYPE])

    feats, _ = model.extract_features(x)
    assert_layers_close(feats, ref_states[1:], ATOL[DTYPE], what="extract_features element")

    out, _ = model(x)
    assert (model.lm_head is not None) == (meta["output"] == "logits")
    torch.testing.assert_close(out, ref_out, atol=ATOL[DTYPE], rtol=0)


@torch.inference_mode()
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("fixture", BATCHED)
def test_batch_with_lengths(fixture, inputs, exact):
    """HF ran the padded batch with an attention mask; only layer-norm models have
    batch references, for which padding does not leak into valid frames either way."""
    d, model, refs, _ = loaded(fixture)
    x, lengths = inputs["batch"], inputs["batch_lengths"]
    ref_states, ref_out = reference(refs, "batch")

    states, frame_lengths = model.hidden_states(x, lengths, exact=exact)
    expected_frames = [w2v.num_frames(int(n), model.config) for n in lengths]
    assert frame_lengths.tolist() == expected_frames
    assert_layers_close(states, ref_states, ATOL[DTYPE], frames=expected_frames)

    out, _ = model(x, lengths, exact=exact)
    assert_layers_close([out], [ref_out], ATOL[DTYPE], frames=expected_frames, what="output")


@pytest.mark.parametrize("fixture", NAMES)
def test_family_and_normalize_follow_checkpoint(fixture):
    d, model, _, _ = loaded(fixture)
    cfg = json.loads((d / "config.json").read_text())
    assert model.family == cfg["model_type"]  # the four model types double as family names
    pre = d / "preprocessor_config.json"
    expected = json.loads(pre.read_text())["do_normalize"] if pre.is_file() else False
    assert model.normalize is expected


def test_normalize_fixtures_cover_both_values():
    values = {
        json.loads((HF_FIXTURES / n / "preprocessor_config.json").read_text())["do_normalize"]
        for n in NAMES
        if (HF_FIXTURES / n / "preprocessor_config.json").is_file()
    }
    assert values == {True, False}


def test_missing_preprocessor_config_is_a_notice():
    d = next(
        HF_FIXTURES / n
        for n in NAMES
        if not (HF_FIXTURES / n / "preprocessor_config.json").exists()
    )
    with pytest.warns(UserWarning, match="preprocessor_config.json"):
        model = w2v.load(d)
    assert model.normalize is False


def test_old_weight_norm_key_style_is_covered():
    with safe_open(str(HF_FIXTURES / "hubert" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "encoder.pos_conv_embed.conv.weight_g" in keys
    assert not any("parametrizations" in k for k in keys)


def test_ctc_vocab_from_vocab_json():
    d = HF_FIXTURES / "wav2vec2-ctc"
    vocab = json.loads((d / "vocab.json").read_text())
    model = loaded(d.name)[1]
    assert model.config.vocab_size == len(vocab)
    assert model.vocab == sorted(vocab, key=vocab.get)


def test_loading_does_not_import_transformers():
    code = (
        "import sys, warnings, torch, w2v\n"
        "warnings.simplefilter('ignore')\n"
        f"for name in {NAMES!r}:\n"
        f"    m = w2v.load({str(HF_FIXTURES)!r} + '/' + name)\n"
        "    m(torch.zeros(1, 800))\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    repo = HF_FIXTURES.parent.parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env
    )
    assert result.returncode == 0, result.stderr
