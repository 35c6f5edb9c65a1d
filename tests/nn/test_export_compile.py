"""torch.export with a dynamic time axis, torch.compile, and reduced-precision models."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim, export

import w2v
from tests.helpers import TINY_W2V
from w2v.config import Config

TINY = TINY_W2V
VARIANTS = {
    "wav2vec2-group": Config(**TINY),
    "wav2vec2-layer-preln": Config(
        **TINY, conv_norm="layer", layer_norm_first=True, conv_bias=True
    ),
    "hubert-batchnorm": Config(**TINY, pos_conv="batch_norm", feat_proj_layer_norm=False),
    "data2vec-stack": Config(
        **{**TINY, "pos_conv_kernel": 5}, conv_norm="layer", pos_conv="stack", pos_conv_depth=3
    ),
    "wavlm": Config(**TINY, rel_pos_buckets=320, rel_pos_max_distance=800),
    "ctc": Config(**TINY, vocab_size=7),
}
FP32 = dict(atol=1e-5, rtol=0)
# torch.export specialises dimensions of size 1, so exported programs need >= 2 frames
EXPORT_MIN_SAMPLES = 720


def _model(config):
    torch.manual_seed(0)
    return w2v.from_config(config)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_export_dynamic_time_and_batch(name):
    model = _model(VARIANTS[name])
    x, lengths = torch.randn(2, 16000), torch.tensor([16000, 9000])
    samples = Dim("samples", min=EXPORT_MIN_SAMPLES, max=16000 * 3600)
    batch = Dim("batch", min=1, max=1024)
    program = export(model, (x, lengths), dynamic_shapes=({0: batch, 1: samples}, {0: batch}))
    exported = program.module()
    for n in (EXPORT_MIN_SAMPLES, 1234, 48000):
        xx = torch.randn(3, n)
        ll = torch.tensor([n, max(EXPORT_MIN_SAMPLES, n // 2), n])
        got, got_frames = exported(xx, ll)
        want, want_frames = model(xx, ll)
        torch.testing.assert_close(got, want, **FP32)
        assert torch.equal(got_frames, want_frames)
        assert got.shape[1] == w2v.num_frames(n)


def test_forward_has_no_data_dependent_branching():
    # export with strict tracing fails on .item() or Python branching on tensor values
    model = _model(VARIANTS["wavlm"])
    x, lengths = torch.randn(2, 8000), torch.tensor([8000, 4000])
    export(model, (x, lengths), strict=True)


def test_compile_matches_eager_and_keeps_input_checks():
    model = _model(VARIANTS["wavlm"])
    x, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    with torch.inference_mode():
        want, _ = model(x, lengths)
        with pytest.warns(UserWarning, match="slower than w2v's eager fast paths"):
            model.compile()  # on a CPU
        got, _ = model(x, lengths)
        torch.testing.assert_close(got, want, **FP32)
        # input value checks run eagerly, outside the compiled region
        with pytest.raises(ValueError, match="400"):
            model(x, torch.tensor([8000, 399]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_fp32_with_fp32_norms(dtype):
    # real widths, reduced depth: cosine similarity per layer against fp32
    config = Config(num_layers=3)
    torch.manual_seed(0)
    fp32 = w2v.from_config(config)
    half = w2v.from_config(config)
    half.load_state_dict(fp32.state_dict())
    w2v.loading.to(half, dtype=dtype)
    norms = [m for m in half.modules() if isinstance(m, torch.nn.LayerNorm | torch.nn.GroupNorm)]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    assert half.encoder.layers[0].attention.q_proj.weight.dtype == dtype
    # conv layer 0 computes in fp32 from the waveform; the rest in the model's dtype
    first = half.feature_extractor.conv_layers[0]
    assert all(p.dtype == torch.float32 for p in first.parameters())
    assert half.feature_extractor.conv_layers[1].conv.weight.dtype == dtype
    x = torch.randn(2, 32000) * 0.1
    with torch.inference_mode():
        ref, _ = fp32.hidden_states(x, [32000, 20000])
        got, frames = half.hidden_states(x.to(dtype), [32000, 20000])
        # an fp32 waveform is accepted as is (and keeps its precision in layer 0)
        from_fp32, _ = half.hidden_states(x, [32000, 20000])
    assert all(a.dtype == dtype for a in from_fp32)
    for a, b in zip(got + from_fp32, ref + ref, strict=True):
        assert a.dtype == dtype
        for i, n in enumerate(frames.tolist()):
            cos = torch.nn.functional.cosine_similarity(a[i, :n].float(), b[i, :n], dim=-1)
            assert cos.min().item() >= 0.999


@pytest.mark.parametrize("name", ["wav2vec2-group", "wav2vec2-layer-preln", "data2vec-stack"])
def test_fp32_model_under_cpu_autocast(name):
    """transformers-style bf16 (an fp32 model under torch.autocast) runs and stays close."""
    model = _model(VARIANTS[name])
    x = torch.randn(2, 8000) * 0.1
    with torch.inference_mode():
        ref, frames = model.hidden_states(x, [8000, 5000])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, _ = model.hidden_states(x, [8000, 5000])
    assert got[-1].dtype == torch.bfloat16
    for layer, (a, b) in enumerate(zip(got, ref, strict=True)):
        for i, n in enumerate(frames.tolist()):
            cos = torch.nn.functional.cosine_similarity(a[i, :n].float(), b[i, :n], dim=-1)
            assert cos.min().item() >= 0.99, f"layer {layer}, item {i}"
