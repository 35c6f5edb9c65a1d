"""The conv feature encoder: its plain form (w2v.nn.feature_encoder) against its fast
form (w2v.nn.fast), the one dispatch between them, and the fast form's blocks of time.

No transformers needed: parity with the reference is in test_stages.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import TINY_W2V, perturb_
from w2v.config import Config
from w2v.loading import to
from w2v.nn import fast
from w2v.nn.fast import conv_stack, layer0
from w2v.nn.feature_encoder import FeatureEncoder
from w2v.nn.model import Model

FP32 = dict(rtol=0, atol=1e-5)


def waveform(samples: int = 9000, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def encoder(conv_norm: str, seed: int = 0) -> FeatureEncoder:
    """A tiny encoder whose features are of order 1 (default init shrinks them layer by
    layer) and whose norms have non-trivial affine parameters."""
    torch.manual_seed(seed)
    config = Config(**TINY_W2V, conv_norm=conv_norm, conv_bias=conv_norm == "layer")
    enc = perturb_(FeatureEncoder(config), seed)
    with torch.no_grad():
        for layer in enc.conv_layers:
            weight = layer.conv.weight
            weight.normal_(0, (2 / weight[0].numel()) ** 0.5)
    return enc


def fast_form(enc: FeatureEncoder, x: torch.Tensor, norm_lengths: torch.Tensor | None):
    stack = [(layer.conv, layer.layer_norm) for layer in enc.conv_layers]
    return fast.forward(stack, x, norm_lengths, enc.dtype)


@torch.inference_mode()
@pytest.mark.parametrize("conv_norm", ["group", "layer"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_plain_form_equals_fast_form(conv_norm, with_lengths):
    """fp32 on CPU: the fast form computes the plain form's features, and it is the form
    ``forward`` runs (same bits); the plain form is a different computation (other bits)."""
    enc = encoder(conv_norm)
    x = waveform(9000)
    lengths = torch.tensor([9000, 4321]) if with_lengths else None
    norm_lengths = None if lengths is None else enc.conv_layers[0].out_lengths(lengths)
    plain = enc.plain(x, norm_lengths)
    product = fast_form(enc, x, norm_lengths)
    assert plain.shape == product.shape == (2, 27, 32)
    torch.testing.assert_close(product, plain, **FP32)
    assert not torch.equal(product, plain)  # two forms, not one run twice
    features, _ = enc(x, lengths)
    assert torch.equal(features, product)  # forward dispatched to the fast form
    if with_lengths and conv_norm == "group":  # the valid-frame statistics reach both forms
        padded_stats = enc.plain(x, None)
        assert not torch.allclose(padded_stats[1, :10], plain[1, :10], atol=1e-3)


@torch.inference_mode()
@pytest.mark.parametrize("conv_norm", ["group", "layer"])
def test_graph_form_runs_under_export(conv_norm, monkeypatch):
    """torch.export traces the graph form (w2v/nn/fast/graph.py: plain convolutions, layer
    0's GroupNorm folded): ``forward`` dispatches there while exporting."""
    enc = encoder(conv_norm)
    x, lengths = waveform(9000), torch.tensor([9000, 4321])
    assert fast.applies(x, torch.float32)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    stack = [(layer.conv, layer.layer_norm) for layer in enc.conv_layers]
    norm_lengths = enc.conv_layers[0].out_lengths(lengths)
    features, frames = enc(x, lengths)
    assert torch.equal(features, fast.graph.forward(stack, x, norm_lengths, torch.float32))
    torch.testing.assert_close(features, enc.plain(x, norm_lengths), atol=1e-5, rtol=0)
    assert frames.tolist() == [27, 13]


@pytest.mark.parametrize("conv_norm", ["group", "layer"])
def test_plain_form_gradient_equals_fast_form_gradient(conv_norm):
    """Autograd through either form gives the same parameter gradients."""
    enc = encoder(conv_norm)
    x, lengths = waveform(6000), torch.tensor([6000, 4000])
    norm_lengths = enc.conv_layers[0].out_lengths(lengths)
    grads = []
    for run in (lambda: enc.plain(x, norm_lengths), lambda: enc(x, lengths)[0]):
        enc.zero_grad()
        run().square().mean().backward()
        grads.append([p.grad.clone() for p in enc.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("conv_norm", ["group", "layer"])
@pytest.mark.parametrize("exact", [True, False])
def test_conv_blocks_of_time_equal_one_block(conv_norm, dtype, exact, monkeypatch):
    """Conv layers 0-2 run in blocks of time (layer 0 in fp32 for half models), with the
    GroupNorm statistics also gathered in blocks; the blocking changes nothing."""
    torch.manual_seed(0)
    model = to(Model(Config(**TINY_W2V, conv_norm=conv_norm)), dtype=dtype).eval()
    encoder = model.feature_extractor
    x, lengths = waveform(9000, batch=3), torch.tensor([9000, 5000, 777])
    monkeypatch.setattr(conv_stack, "_BLOCK_FRAMES", {"cpu": 10**9})
    monkeypatch.setattr(layer0, "_STATS_BLOCK_FRAMES", 10**9)
    whole, frames = encoder(x, lengths, exact)

    blocks_seen = []
    forward_windows = layer0.forward_windows

    def counting(norm, windows, affine):
        blocks_seen.append(windows.shape[1])
        return forward_windows(norm, windows, affine)

    monkeypatch.setattr(layer0, "forward_windows", counting)
    # 3 items × 100 layer-2 frames (~400 layer-0 frames each) per block, a ragged tail;
    # statistics over blocks of 3 × 129 windows
    monkeypatch.setattr(conv_stack, "_BLOCK_FRAMES", {"cpu": 4 * 3 * 100 + 2})
    monkeypatch.setattr(layer0, "_STATS_BLOCK_FRAMES", 3 * 129)
    blocks, frames2 = encoder(x, lengths, exact)
    assert len(blocks_seen) == 5 and len(set(blocks_seen)) == 2, blocks_seen
    assert whole.dtype == blocks.dtype == dtype
    assert torch.equal(frames, frames2)
    if dtype == torch.float32:  # matrix products of other sizes round differently
        torch.testing.assert_close(blocks, whole, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(blocks, whole, rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize("conv_norm", ["group", "layer"])
def test_conv_inference_path_equals_autograd_path(conv_norm, monkeypatch):
    """Inference takes the blocked path; a graph for autograd takes one block (the
    convolutions differentiable as they are). Same numbers."""
    torch.manual_seed(0)
    encoder = Model(Config(**TINY_W2V, conv_norm=conv_norm)).feature_extractor
    monkeypatch.setattr(conv_stack, "_BLOCK_FRAMES", {"cpu": 4 * 2 * 100})
    x, lengths = waveform(9000, batch=2), torch.tensor([9000, 6001])
    with_graph, _ = encoder(x, lengths)
    assert with_graph.requires_grad
    with torch.inference_mode():
        inference, _ = encoder(x, lengths)
    torch.testing.assert_close(inference, with_graph.detach(), rtol=0, atol=1e-5)


def test_conv_gradient_with_respect_to_the_waveform(monkeypatch):
    """A frozen encoder differentiated with respect to its input (as in adversarial or
    saliency studies) takes the autograd path, not the in-place products."""
    torch.manual_seed(0)
    encoder = Model(Config(**TINY_W2V)).feature_extractor.requires_grad_(False)
    monkeypatch.setattr(conv_stack, "_BLOCK_FRAMES", {"cpu": 4 * 100})
    x = waveform(6000, batch=1).requires_grad_(True)
    feats, _ = encoder(x)
    feats.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    plain = x.detach().clone().requires_grad_(True)
    encoder.plain(plain).square().sum().backward()
    torch.testing.assert_close(x.grad, plain.grad, rtol=1e-4, atol=1e-6)
