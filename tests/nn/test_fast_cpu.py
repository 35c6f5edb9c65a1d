"""The CPU fast paths beside the plain modules: channels-last convolutions
(w2v/nn/functional.py, w2v/nn/fast/layers.py), derived weights kept between calls
(w2v/nn/fast/derived.py), long-sequence attention (w2v/nn/fast/attention.py) and the
feed-forward in blocks of rows (w2v/nn/fast/rows.py). Each computes the plain form's
numbers, is taken only where it does, and leaves hooks, autograd and exports alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import w2v.nn.fast.attention as fast_attention
import w2v.nn.fast.linear as fast_linear
import w2v.nn.fast.rows as rows
from tests.helpers import TINY_W2V
from w2v.config import Config
from w2v.nn.functional import channels_last_weight, conv1d_channels_last
from w2v.nn.model import Model
from w2v.nn.positional import WeightNormConv

pytestmark = pytest.mark.skipif(not fast_linear.ONEDNN, reason="torch built without oneDNN")


def _model(**changes) -> Model:
    torch.manual_seed(0)
    return Model(Config(**{**TINY_W2V, **changes})).eval()


def _wave(batch: int, samples: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("stride", "padding", "groups", "kernel"), [(2, 0, 1, 3), (2, 0, 1, 2), (1, 8, 4, 16)]
)
def test_channels_last_conv_equals_conv1d(stride, padding, groups, kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 101, 48, generator=g)  # time-major, as the model holds it
    weight = torch.randn(40, 48 // groups, kernel, generator=g) / 20
    bias = torch.randn(40, generator=g)
    ref = F.conv1d(x.double().transpose(1, 2), weight.double(), bias.double(), stride, padding, 1, groups)
    for w in (weight, channels_last_weight(weight)):
        ours = conv1d_channels_last(x.transpose(1, 2), w, bias, stride, padding, groups)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours.double(), ref, rtol=0, atol=1e-5)
        assert ours.transpose(1, 2).is_contiguous()  # time-major memory, no copy back


def test_positional_weight_is_kept_while_its_parameters_are_unchanged():
    torch.manual_seed(0)
    conv = WeightNormConv(32, 16, 2)
    x = torch.randn(2, 40, 32).transpose(1, 2)
    made = []
    real = torch._weight_norm

    def counting(v, g, dim):
        made.append(1)
        return real(v, g, dim)

    torch._weight_norm = counting
    try:
        with torch.inference_mode():
            a = conv(x)
            b = conv(x)
        assert len(made) == 1 and torch.equal(a, b)  # the second call reused it
        with torch.no_grad():  # an in-place change (as load_state_dict makes) is seen
            conv.weight_v.mul_(2.0)
            conv.weight_g.mul_(0.5)
        with torch.inference_mode():
            c = conv(x)
        assert len(made) == 2 and not torch.equal(a, c)
        fresh = F.conv1d(x, real(conv.weight_v, conv.weight_g, 2), conv.bias, padding=8, groups=2)
        torch.testing.assert_close(c, fresh, rtol=0, atol=1e-5)
        # with autograd: made afresh every call, and gradients reach the parameters
        conv(x).sum().backward()
        assert len(made) == 3 and conv.weight_g.grad is not None
    finally:
        torch._weight_norm = real


@pytest.fixture
def attention_calls(monkeypatch):
    """Every sequence takes the oneDNN attention (the threshold lowered), counted."""
    monkeypatch.setattr(fast_attention, "MIN_FRAMES", 1)
    monkeypatch.setattr(fast_attention, "QUERY_BLOCK", 7)  # several blocks of queries
    seen = []
    real = fast_attention.attention

    def counting(q, k, v, num_heads, lengths):
        seen.append(lengths.tolist())
        return real(q, k, v, num_heads, lengths)

    monkeypatch.setattr(fast_attention, "attention", counting)
    return seen


def test_attention_equals_sdpa_batched_and_alone(attention_calls, monkeypatch):
    model = _model()
    wave, lengths = _wave(2, 8000), torch.tensor([8000, 5600])
    with torch.inference_mode():
        fast, frames = model.hidden_states(wave, lengths)
        assert attention_calls and attention_calls[0] == frames.tolist()
        alone, _ = model.hidden_states(wave[1:, :5600])
        monkeypatch.setattr(fast_attention, "MIN_FRAMES", 10**9)
        attention_calls.clear()
        plain, _ = model.hidden_states(wave, lengths)
        assert attention_calls == []
    n = int(frames[1])
    for a, b, c in zip(fast, plain, alone, strict=True):
        torch.testing.assert_close(a[:, :n], b[:, :n], rtol=0, atol=1e-5)  # valid frames
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(a[1, :n], c[0], rtol=0, atol=1e-5)  # batched = alone


def test_attention_keeps_sdpa_where_it_would_differ(attention_calls):
    model = _model()
    att = model.encoder.layers[0].attention
    x = torch.randn(2, 9, 32)
    gappy = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    gappy[0, ..., 3] = False  # not a prefix of valid frames
    with torch.inference_mode():
        att(x, gappy)
        assert attention_calls == []
        att(x, None)
        assert attention_calls == [[9, 9]]
    attention_calls.clear()
    att(x.requires_grad_(True)).sum().backward()  # autograd: SDPA
    att.train()
    att.dropout = 0.1
    with torch.no_grad():
        att(x)  # attention dropout: SDPA
    assert attention_calls == []
    wavlm = _model(rel_pos_buckets=16, rel_pos_max_distance=32)
    with torch.inference_mode():
        wavlm(_wave(1, 4000))  # a position bias: SDPA
    assert attention_calls == []


def test_feed_forward_in_blocks_of_rows(monkeypatch):
    model = _model()
    wave, lengths = _wave(2, 8000), torch.tensor([8000, 5600])
    blocks = []
    real = rows.by_row_blocks

    def counting(fn, x, out_features):
        blocks.append(x.reshape(-1, x.shape[-1]).shape[0])
        return real(fn, x, out_features)

    monkeypatch.setattr("w2v.nn.encoder.by_row_blocks", counting)
    monkeypatch.setattr(rows, "ROWS", 5)  # many blocks and a ragged last one
    with torch.inference_mode():
        blocked, _ = model.hidden_states(wave, lengths)
        assert len(blocks) == model.config.num_layers
        monkeypatch.setattr(rows, "ROWS", 10**9)
        whole, _ = model.hidden_states(wave, lengths)
    for a, b in zip(blocked, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # a hook on one of its Linear layers sees the whole input once: no blocks
    monkeypatch.setattr(rows, "ROWS", 5)
    blocks.clear()
    seen = []
    ff = model.encoder.layers[0].feed_forward
    ff.intermediate_dense.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    with torch.inference_mode():
        model.hidden_states(wave, lengths)
    assert len(seen) == 1 and len(blocks) == model.config.num_layers - 1
