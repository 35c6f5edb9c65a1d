"""The oneDNN path of the model's Linear layers (w2v/nn/fast/linear.py): the same product as
``F.linear``, taken only where it computes that product, and out of the way of layers the
user swapped or hooked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import w2v
import w2v.nn.fast.linear as fast_linear
from tests.helpers import TINY_W2V
from w2v.config import Config
from w2v.nn.model import Model

pytestmark = pytest.mark.skipif(not fast_linear.ONEDNN, reason="torch built without oneDNN")


@pytest.fixture
def calls(monkeypatch):
    """Counts the products that take the oneDNN path."""
    seen = []
    real = fast_linear.onednn_linear

    def counting(x, weight, bias):
        seen.append(tuple(x.shape))
        return real(x, weight, bias)

    monkeypatch.setattr(fast_linear, "onednn_linear", counting)
    return seen


def _model() -> Model:
    torch.manual_seed(0)
    return Model(Config(**TINY_W2V)).eval()


def test_the_product_equals_f_linear():
    torch.manual_seed(0)
    layer = nn.Linear(96, 40)
    x = torch.randn(3, 17, 96)
    with torch.inference_mode():
        ours = fast_linear.linear(layer, x)
        torch.testing.assert_close(
            ours, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6
        )
        no_bias = nn.Linear(96, 40, bias=False)
        torch.testing.assert_close(
            fast_linear.linear(no_bias, x), F.linear(x, no_bias.weight), rtol=1e-5, atol=1e-6
        )


def test_inference_takes_it_and_matches_the_plain_form(calls, monkeypatch):
    model = _model()
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fast, _ = model.hidden_states(wave, [8000, 6000])
        assert len(calls) == 1 + 6 * model.config.num_layers  # projection; q, k, v, out, ffn x2
        monkeypatch.setattr(fast_linear, "ONEDNN", False)
        plain, _ = model.hidden_states(wave, [8000, 6000])
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_autograd_and_other_dtypes_keep_the_plain_form(calls):
    model = _model()
    wave = torch.randn(1, 8000)
    out, _ = model(wave)  # grad enabled, parameters require grad
    out.sum().backward()
    assert model.encoder.layers[0].attention.q_proj.weight.grad is not None
    with torch.inference_mode():
        model.to(torch.float64)(wave.double())
    assert calls == []


def test_hooked_and_swapped_layers_run_as_they_are(calls):
    model = _model()
    wave = torch.randn(1, 8000)
    seen = []
    q = model.encoder.layers[0].attention.q_proj
    handle = q.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    with torch.inference_mode():
        model(wave)
    handle.remove()
    assert len(seen) == 1  # the hook ran: that layer took its own forward
    assert len(calls) == 6 * model.config.num_layers  # every other layer took oneDNN

    quantized = torch.ao.quantization.quantize_dynamic(_model(), {nn.Linear}, dtype=torch.qint8)
    assert type(quantized.encoder.layers[0].feed_forward.intermediate_dense) is not nn.Linear
    calls.clear()
    with torch.inference_mode():
        a, _ = quantized(wave)
        assert len(calls) == 0  # every Linear was swapped, so none took the fp32 path
        b, _ = _model()(wave)
    assert not torch.equal(a, b)  # and int8 really ran
    assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_loaded_models_use_it(calls):
    model = w2v.from_config(Config(**TINY_W2V))
    with torch.inference_mode():
        model(torch.randn(1, 8000))
    assert calls
