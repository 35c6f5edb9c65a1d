"""Train mode: dropouts and layer drop placed and drawn as transformers does them, so that
with one seed both give the same numbers; eval mode untouched; gradient scaling, freezing
and gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from tests.train.conftest import hf_base, w2v_copy
from w2v.config import Regularization

pytest.importorskip("transformers")

REG = Regularization(
    feat_proj_dropout=0.1,
    hidden_dropout=0.15,
    attention_dropout=0.2,
    activation_dropout=0.25,
    layerdrop=0.3,
)
HF_DROPOUTS = dict(
    feat_proj_dropout=REG.feat_proj_dropout,
    hidden_dropout=REG.hidden_dropout,
    attention_dropout=REG.attention_dropout,
    activation_dropout=REG.activation_dropout,
    layerdrop=REG.layerdrop,
    mask_time_prob=0.0,  # SpecAugment off: it draws from numpy, outside this comparison
    num_hidden_layers=4,
)
VARIANTS = {
    "wav2vec2-post-ln": ("wav2vec2", {}),
    "wav2vec2-pre-ln": (
        "wav2vec2",
        dict(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True),
    ),
    "hubert": ("hubert", {}),
    "data2vec-audio": ("data2vec-audio", {}),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, device):
    family, overrides = VARIANTS[request.param]
    hf = hf_base(family, **HF_DROPOUTS, **overrides)
    ours = w2v_copy(hf, family)
    ours.set_regularization(REG)
    return hf.to(device), ours.to(device)


def on(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def test_train_mode_equals_transformers_with_one_seed(pair):
    hf, ours = pair
    hf.train()
    ours.train()
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1)).to(on(ours))
    skipped = set()
    for seed in range(6):  # layer drop skips different layers for different seeds
        torch.manual_seed(seed)
        ref = hf(x).last_hidden_state
        torch.manual_seed(seed)
        out, _ = ours(x)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.manual_seed(seed)
        skipped.add(tuple(bool(torch.rand([]) < REG.layerdrop) for _ in range(4)))
    assert len(skipped) > 1  # the seeds did exercise layer drop
    # and dropout did act: two seeds give different outputs
    torch.manual_seed(0)
    a, _ = ours(x)
    torch.manual_seed(100)
    b, _ = ours(x)
    assert not torch.allclose(a, b)


def test_train_mode_gradients_equal_transformers(pair):
    hf, ours = pair
    hf.train()
    ours.train()
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(2)).to(on(ours))
    lengths = torch.tensor([8000, 5600], device=x.device)
    mask = (torch.arange(8000, device=x.device)[None] < lengths[:, None]).long()
    hf.zero_grad()
    ours.zero_grad()
    # seed 0: on a GPU (where only layer drop draws from the CPU's generator) layers 0
    # and 1 run and 2 and 3 are dropped
    torch.manual_seed(0)
    hf(x, attention_mask=mask).last_hidden_state.square().sum().backward()
    torch.manual_seed(0)
    ours(x, lengths, exact=False)[0].square().sum().backward()
    theirs = {k: p.grad for k, p in hf.named_parameters()}
    compared = 0
    for name, p in ours.named_parameters():
        if name not in theirs:
            continue
        ref = theirs[name]
        # a layer dropped on one side must be dropped on the other
        assert (ref is None) == (p.grad is None), name
        if ref is None:
            continue
        torch.testing.assert_close(
            p.grad, ref, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}"
        )
        compared += 1
    # which layers the seed drops depends on the device (dropout draws from the CPU's
    # generator on the CPU only); some encoder layer must have run
    assert any(layer.attention.q_proj.weight.grad is not None for layer in ours.encoder.layers)
    assert compared > 10


def test_eval_mode_ignores_regularization():
    hf = hf_base("wav2vec2", **HF_DROPOUTS)
    plain = w2v_copy(hf).eval()
    regular = w2v_copy(hf).set_regularization(REG).eval()
    x = torch.randn(2, 8000)
    states_a, _ = plain.hidden_states(x)
    torch.manual_seed(5)
    before = torch.rand(4)
    torch.manual_seed(5)
    states_b, _ = regular.hidden_states(x)
    after = torch.rand(4)
    assert len(states_b) == 5
    for a, b in zip(states_a, states_b, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(before, after)  # eval mode draws no random numbers


def test_layer_drop_keeps_every_index():
    """A skipped layer passes its input on: the state at its index is the previous one."""
    hf = hf_base("wav2vec2", **HF_DROPOUTS)
    ours = w2v_copy(hf).set_regularization(Regularization(layerdrop=0.5)).train()
    x = torch.randn(1, 8000)
    for seed in range(8):
        torch.manual_seed(seed)
        draws = [bool(torch.rand([]) < 0.5) for _ in range(4)]
        torch.manual_seed(seed)
        states, _ = ours.hidden_states(x)
        assert len(states) == 5
        for i, skipped in enumerate(draws, start=1):
            assert torch.equal(states[i], states[i - 1]) == skipped


def test_regularization_is_checked():
    with pytest.raises(ValueError, match="hidden_dropout"):
        Regularization(hidden_dropout=1.0)
    with pytest.raises(ValueError, match="layerdrop"):
        Regularization(layerdrop=-0.1)
    with pytest.raises(TypeError, match="Regularization"):
        w2v_copy(hf_base()).set_regularization({"hidden_dropout": 0.1})
    assert Regularization.from_dict(REG.to_dict()) == REG


def _grads(model, x, seed: int) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(seed)
    model(x)[0].square().mean().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients():
    ours = w2v_copy(hf_base("wav2vec2", **HF_DROPOUTS)).set_regularization(REG).train()
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(4))
    plain = _grads(ours, x, seed=7)
    ours.gradient_checkpointing = True
    checkpointed = _grads(ours, x, seed=7)
    assert plain.keys() == checkpointed.keys()
    for k in plain:
        torch.testing.assert_close(checkpointed[k], plain[k], atol=1e-6, rtol=0)


def test_feature_grad_mult_scales_only_the_conv_encoder():
    ours = w2v_copy(hf_base("wav2vec2")).train()
    x = torch.randn(1, 8000, generator=torch.Generator().manual_seed(5))
    full = _grads(ours, x, seed=0)
    ours.feature_grad_mult = 0.1
    scaled = _grads(ours, x, seed=0)
    for k in full:
        factor = 0.1 if k.startswith("feature_extractor.") else 1.0
        torch.testing.assert_close(scaled[k], full[k] * factor, atol=1e-7, rtol=1e-5)
    ours.feature_grad_mult = 0.0
    none = _grads(ours, x, seed=0)
    assert not any(k.startswith("feature_extractor.") for k in none)


def test_freeze_feature_encoder():
    ours = w2v_copy(hf_base("wav2vec2")).freeze_feature_encoder().train()
    grads = _grads(ours, torch.randn(1, 8000), seed=0)
    assert not any(k.startswith("feature_extractor.") for k in grads)
    assert "feature_projection.projection.weight" in grads
