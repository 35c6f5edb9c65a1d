"""The conv stack's graph form (what torch.export and ``w2v export --onnx`` trace) against
the plain form, eagerly: layer 0's GroupNorm folded into its product, statistics over
valid frames."""

from __future__ import annotations

import pytest
import torch

import w2v
from tests.helpers import TINY_W2V, perturb_
from w2v.config import Config
from w2v.nn.fast import graph

CONFIGS = {
    "group": Config(**{**TINY_W2V, "conv_dim": (64,) * 7}),
    "layer": Config(**{**TINY_W2V, "conv_dim": (64,) * 7}, conv_norm="layer", conv_bias=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("with_lengths", [True, False])
def test_graph_form_matches_plain_form(name, with_lengths):
    torch.manual_seed(0)
    fe = perturb_(w2v.from_config(CONFIGS[name])).feature_extractor
    # an offset and a slope: the windows' statistics are far from zero mean, unit variance
    x = torch.randn(3, 24000) * 0.1 + 0.3 + torch.linspace(0, 1, 24000)
    lengths = torch.tensor([24000, 13000, 400])
    norm_lengths = fe.conv_layers[0].out_lengths(lengths) if with_lengths else None
    stack = [(layer.conv, layer.layer_norm) for layer in fe.conv_layers]
    with torch.inference_mode():
        want = fe.plain(x, norm_lengths)
        got = graph.forward(stack, x, norm_lengths, torch.float32)
    assert got.shape == want.shape
    for i, n in enumerate(fe(x, lengths)[1].tolist() if with_lengths else [want.shape[1]] * 3):
        torch.testing.assert_close(got[i, :n], want[i, :n], atol=1e-5, rtol=0)
