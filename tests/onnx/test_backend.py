"""The onnxruntime backend against the PyTorch path: every layer of every family, batched
with lengths and each item alone; the same one-line errors; a checkpoint → ONNX → embed
round trip through the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import w2v
from tests.helpers import HF_FIXTURES, TINY_W2V, assert_layers_close, perturb_
from w2v.cli import main
from w2v.config import Config
from w2v.errors import UsageError

pytest.importorskip("onnxruntime")
from w2v.onnx import OnnxModel  # noqa: E402

FP32 = 1e-4  # the bound per layer; measured 2e-6 (tiny) to 1e-5 (base)
PRE_LN = dict(conv_norm="layer", layer_norm_first=True, conv_bias=True)
TINY = {
    "wav2vec2-postln-ctc": Config(**TINY_W2V, vocab_size=7),  # forward gives CTC logits
    "wav2vec2-preln": Config(**TINY_W2V, **PRE_LN),
    "hubert-batchnorm": Config(**TINY_W2V, pos_conv="batch_norm", feat_proj_layer_norm=False),
    "data2vec-audio": Config(
        **{**TINY_W2V, "pos_conv_kernel": 5}, conv_norm="layer", pos_conv="stack", pos_conv_depth=3
    ),
    "wavlm": Config(**TINY_W2V, rel_pos_buckets=320, rel_pos_max_distance=800),
}


def _base(name: str, **changes) -> Config:
    return dataclasses.replace(Config.from_name(name), **changes)


# base width, one transformer layer (every layer is the same graph; full depth only makes
# the export slower: 12 layers took two minutes on two busy cores)
BASE = {
    "wav2vec2-base": lambda: _base("wav2vec2-base", num_layers=1),
    "wav2vec2-base-preln": lambda: _base("wav2vec2-base", num_layers=1, **PRE_LN),
    "hubert-base": lambda: _base("hubert-base", num_layers=1),
    "data2vec-audio-base": lambda: _base("data2vec-audio-base", num_layers=1),
    "wavlm-base": lambda: _base("wavlm-base", num_layers=1),
}


def _pair(config: Config) -> tuple[w2v.Model, OnnxModel]:
    torch.manual_seed(0)
    model = perturb_(w2v.from_config(config))  # non-trivial norms, BatchNorm statistics
    return model, OnnxModel.from_model(model)


def _check_matches(model, onnx_model, samples):
    """Every layer and the output, batched with lengths and each item alone, on valid frames."""
    torch.manual_seed(1)
    lengths = torch.tensor(samples)
    x = torch.randn(len(samples), max(samples)) * 0.1
    with torch.inference_mode():
        want, frames = model.hidden_states(x, lengths)
        want_out, _ = model(x, lengths)
    got, got_frames = onnx_model.hidden_states(x, lengths)
    assert torch.equal(got_frames, frames)
    n = frames.tolist()
    assert_layers_close(got, want, FP32, n)
    got_out, _ = onnx_model(x, lengths)
    assert_layers_close([got_out], [want_out], FP32, n, what="output")
    for i, s in enumerate(samples):
        alone, alone_frames = onnx_model.hidden_states(x[i : i + 1, :s])
        assert alone_frames is None
        assert_layers_close(alone, [w[i : i + 1] for w in want], FP32, [n[i]])


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_every_family_matches_pytorch(name):
    model, onnx_model = _pair(TINY[name])
    _check_matches(model, onnx_model, [16000, 9000, 400])  # 400 samples: one frame


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BASE))
def test_base_every_family_matches_pytorch(name):
    model, onnx_model = _pair(BASE[name]())
    _check_matches(model, onnx_model, [48000, 20000])


BAD_CALLS = [
    ((np.zeros((1, 8000), np.float32),), {}),  # not a tensor
    ((torch.zeros(8000, dtype=torch.int16),), {}),
    ((torch.zeros(1, 1, 8000),), {}),
    ((torch.zeros(0, 8000),), {}),
    ((torch.zeros(1, 399),), {}),
    ((torch.zeros(2, 8000), [8000]), {}),
    ((torch.zeros(2, 8000), [8000.0, 500.0]), {}),
    ((torch.zeros(2, 8000), [8000, 300]), {}),
    ((torch.zeros(2, 8000), [8000, 9000]), {}),
    ((torch.zeros(1, 8000),), {"layers": [3]}),
    ((torch.zeros(1, 8000),), {"layers": "12"}),
    ((torch.zeros(1, 8000),), {"layers": [1.0]}),
]


@pytest.mark.parametrize("args, kwargs", BAD_CALLS)
def test_bad_input_same_errors_as_pytorch(args, kwargs):
    model = w2v.from_config(TINY["wavlm"])
    onnx_model = OnnxModel.from_model(model)  # the checks run before any graph is exported
    with pytest.raises((TypeError, ValueError)) as want:
        model.hidden_states(*args, **kwargs)
    with pytest.raises(want.type) as got:
        onnx_model.hidden_states(*args, **kwargs)
    assert str(got.value) == str(want.value)
    assert "\n" not in str(got.value)
    assert not onnx_model._sessions


@pytest.mark.filterwarnings("ignore:.*preprocessor_config")
def test_load_refuses_what_the_backend_cannot_do():
    path = HF_FIXTURES / "wav2vec2-group"
    with pytest.raises(UsageError, match="CPU"):
        w2v.load(path, backend="onnxruntime", device="meta")
    with pytest.raises(UsageError, match="float32"):
        w2v.load(path, backend="onnxruntime", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="unknown backend"):
        w2v.load(path, backend="tensorrt")
    half = w2v.loading.to(w2v.load(path), dtype=torch.bfloat16)
    with pytest.raises(UsageError, match="float32 model on the CPU"):
        OnnxModel.from_model(half)
    with pytest.raises(UsageError, match="eval mode"):
        OnnxModel.from_model(w2v.load(path).train())


@pytest.mark.filterwarnings("ignore:.*preprocessor_config")
def test_cli_checkpoint_to_onnx_round_trip(tmp_path, capsys):
    import soundfile as sf

    src = HF_FIXTURES / "wav2vec2-group"  # two layers
    out = tmp_path / "model.onnx"
    assert main(["export", "--onnx", str(src), str(tmp_path / "model.txt")]) == 2
    assert main(["export", "--onnx", str(src), str(out), "--layers", "0,-2"]) == 0
    assert main(["export", "--onnx", str(src), str(out)]) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err

    torch.manual_seed(0)
    x, lengths = torch.randn(2, 12000) * 0.1, torch.tensor([12000, 7000])
    ref = w2v.load(src)
    loaded = w2v.load(out, backend="onnxruntime")
    assert loaded.config == ref.config and loaded.info == ref.info
    with torch.inference_mode():
        want, frames = ref.hidden_states(x, lengths, [0, 1])
    got, _ = loaded.hidden_states(x, lengths, [0, 1])
    assert_layers_close(got, want, FP32, frames.tolist())
    # the graph stops at layer 1: no layer 2, no model output
    session = loaded._fixed[0]
    assert [o.name for o in session.get_outputs()] == ["layer_0", "layer_1", "frame_lengths"]
    with pytest.raises(ValueError, match=r"holds layers \[0, 1\], not layers \[2\]"):
        loaded.hidden_states(x, lengths, [2])
    with pytest.raises(ValueError, match="not the model output"):
        loaded(x, lengths)
    with pytest.raises(ValueError, match="exact=True"):
        loaded.hidden_states(x, lengths, [0], exact=False)

    # w2v embed through the graph: the torch run's numbers, the backend in the manifest
    audio = tmp_path / "audio"
    audio.mkdir()
    for i, n in enumerate([16000, 6000]):
        sf.write(audio / f"a{i}.wav", (np.random.randn(n) * 0.1).astype(np.float32), 16000)
    runs = {"onnxruntime": ["--model", str(out)], "torch": ["--model", str(src)]}
    for backend, model_args in runs.items():
        argv = ["embed", str(audio), *model_args, "--out", str(tmp_path / backend)]
        assert main([*argv, "--layers", "0,1", "--backend", backend, "--quiet"]) == 0
    for name in ("a0.wav.npy", "a1.wav.npy"):
        a, b = (np.load(tmp_path / backend / name) for backend in runs)
        np.testing.assert_allclose(a, b, atol=FP32, rtol=0)
    for backend in runs:
        lines = (tmp_path / backend / "manifest.jsonl").read_text().splitlines()
        assert {json.loads(line)["backend"] for line in lines} == {backend}

    # the Python API: w2v.embed with the backend named
    wave = np.random.randn(9000).astype(np.float32) * 0.1
    got = w2v.embed(wave, str(out), sample_rate=16000, layers=[0, 1], backend="onnxruntime")
    want = w2v.embed(wave, ref, sample_rate=16000, layers=[0, 1])
    np.testing.assert_allclose(got[0], want[0], atol=FP32, rtol=0)
