"""Full-size random-init parity with fairseq itself (runs only where fairseq is importable).

See ``tests/fixtures/make_fairseq_fixtures.py`` for installing fairseq beside
the project. The committed tiny fixtures cover every layout without fairseq.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

fairseq = pytest.importorskip("fairseq")

import w2v  # noqa: E402

pytestmark = [pytest.mark.fairseq, pytest.mark.slow]

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

SIZES = {
    "base": dict(),
    "large-lv60": dict(
        extractor_mode="layer_norm",
        layer_norm_first=True,
        conv_bias=True,
        encoder_layers=24,
        encoder_embed_dim=1024,
        encoder_ffn_embed_dim=4096,
        encoder_attention_heads=16,
    ),
}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_fullsize_parity(size, tmp_path):
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(**SIZES[size])
    cfg._name = "wav2vec2"
    ref = Wav2Vec2Model(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():  # LayerNorms are 1/0 at init; make every weight count
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / f"{size}.pt"
    container = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    torch.save(
        {"cfg": {"model": container, "task": {"normalize": False}}, "model": ref.state_dict()}, path
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = w2v.load(path)
    wave = torch.randn(1, 16000)
    with torch.no_grad():
        res = ref.extract_features(wave, padding_mask=None, mask=False)
        layers, _ = model.extract_features(wave)
        out, _ = model(wave)
    assert len(layers) == len(res["layer_results"])
    for x, (r, _, _) in zip(layers, res["layer_results"], strict=True):
        torch.testing.assert_close(x, r.transpose(0, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(out, res["x"], atol=1e-4, rtol=0)
