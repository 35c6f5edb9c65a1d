"""WeightedLayerSum: transformers' weighted layer sum, s3prl's layer-normed form, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from w2v.config import num_frames
from w2v.nn import WeightedLayerSum

ATOL = 1e-6  # fp32, sums of at most 5 terms of size ~1


def test_zero_initialised_equal_weights():
    mix = WeightedLayerSum(4)
    torch.testing.assert_close(mix.weights.detach(), torch.zeros(4))
    torch.testing.assert_close(mix.normalized_weights.detach(), torch.full((4,), 0.25))


def test_equals_transformers_weighted_layer_sum():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        use_weighted_layer_sum=True,
        num_labels=3,
    )
    ref = transformers.Wav2Vec2ForSequenceClassification(config).eval()
    with torch.no_grad():
        ref.layer_weights.copy_(torch.randn(config.num_hidden_layers + 1))
    seen = {}
    ref.projector.register_forward_pre_hook(lambda m, args: seen.update(mixed=args[0]))
    ref.classifier.register_forward_pre_hook(lambda m, args: seen.update(pooled=args[0]))
    wave = torch.randn(2, 8000)
    mask = torch.ones(2, 8000, dtype=torch.long)
    mask[1, 5000:] = 0  # item 1 is right-padded
    with torch.no_grad():
        out = ref(wave, attention_mask=mask, output_hidden_states=True)
    hidden = out.hidden_states  # (B, T, D) per layer, transformer input first
    mix = WeightedLayerSum(len(hidden))
    with torch.no_grad():
        mix.weights.copy_(ref.layer_weights)
        mixed, _ = mix(hidden)
        torch.testing.assert_close(mixed, seen["mixed"], atol=ATOL, rtol=0)
        # the classifier's input is the projected sum averaged over valid frames, and the
        # projection is affine: so it is the projection of our pooled sum
        lengths = torch.tensor([num_frames(8000), num_frames(5000)])
        pooled = ref.projector(mix.pool(hidden, lengths))
        torch.testing.assert_close(pooled, seen["pooled"], atol=ATOL, rtol=0)


def test_layer_norm_form_is_softmax_weighted_sum_of_normed_layers():
    torch.manual_seed(1)
    layers = torch.randn(5, 2, 7, 16) * 3 + 1  # (L, B, T, D)
    mix = WeightedLayerSum(5, layer_norm=True)
    with torch.no_grad():
        mix.weights.copy_(torch.randn(5))
    w = torch.softmax(mix.weights.detach(), 0)
    expected = sum(w[i] * F.layer_norm(layers[i], (16,)) for i in range(5))
    got, _ = mix(layers)
    torch.testing.assert_close(got.detach(), expected, atol=ATOL, rtol=0)
    stacked, _ = mix(list(layers))  # a sequence gives the same as a stacked tensor
    torch.testing.assert_close(stacked, got)


def test_padded_frames_never_leak():
    torch.manual_seed(2)
    layers = torch.randn(3, 2, 10, 8)
    lengths = torch.tensor([10, 6])
    for layer_norm in (False, True):
        mix = WeightedLayerSum(3, layer_norm=layer_norm)
        with torch.no_grad():
            mix.weights.copy_(torch.randn(3))
        clean = mix.pool(layers, lengths)
        dirty = layers.clone()
        dirty[:, 1, 6:] = float("nan")  # garbage where item 1 is padding
        dirty[:, 1, 7:] = 1e30
        got = mix.pool(dirty, lengths)
        torch.testing.assert_close(got, clean)
        # item 1 alone, unpadded, gives the same vector
        alone = mix.pool(layers[:, 1:, :6], lengths[1:])
        torch.testing.assert_close(got[1:], alone, atol=ATOL, rtol=0)
        frames, _ = mix(dirty, lengths)
        assert torch.all(frames[1, 6:] == 0)


def test_weights_train():
    mix = WeightedLayerSum(3)
    layers = torch.randn(3, 4, 5, 2)
    out, _ = mix(layers)
    out.sum().backward()
    assert mix.weights.grad is not None and mix.weights.grad.abs().sum() > 0
