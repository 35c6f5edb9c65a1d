"""wav2vec 2.0's pretraining loss against transformers' ``Wav2Vec2ForPreTraining``: the
same checkpoint (saved by transformers, loaded by ``w2v.load`` with its pretraining parts),
the same masks and negatives; eval mode, and train mode with the same Gumbel noise."""

from __future__ import annotations

import warnings

import pytest
import torch

import w2v
from tests.helpers import hf_class, hf_config, perturb_
from w2v.train import compute_mask_indices, sample_negative_indices, wav2vec2_loss

pytest.importorskip("transformers")

PRETRAINING = dict(
    num_codevector_groups=2,
    num_codevectors_per_group=8,
    codevector_dim=16,
    proj_codevector_dim=12,
    num_negatives=5,
    mask_time_prob=0.05,  # transformers builds masked_spec_embed only when masking is on
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    feat_quantizer_dropout=0.0,
    layerdrop=0.0,
)
VARIANTS = {
    "post-ln": {},
    "pre-ln": dict(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True),
    # full-size wav2vec2-base with transformers' pretraining defaults (2 x 320 codevectors)
    "base": dict(
        tiny=False,
        num_codevector_groups=2,
        num_codevectors_per_group=320,
        codevector_dim=256,
        proj_codevector_dim=256,
    ),
}
PARAMS = [
    pytest.param(name, marks=pytest.mark.slow) if name == "base" else name for name in VARIANTS
]
# (batch, samples) with the second item padded
LENGTHS = [16000, 11000]
RTOL = 1e-5  # losses, relative
GRAD_RTOL = 1e-4


def hf_to_w2v(name: str) -> str:
    """transformers' parameter name in Wav2Vec2ForPreTraining → w2v's."""
    if name == "wav2vec2.masked_spec_embed":
        return "pretraining.masked_spec_embed"
    if name.startswith("wav2vec2."):
        name = name.removeprefix("wav2vec2.")
        name = name.replace("parametrizations.weight.original0", "weight_g")
        return name.replace("parametrizations.weight.original1", "weight_v")
    return "pretraining." + name


@pytest.fixture(scope="module", params=PARAMS)
def pair(request, device, tmp_path_factory):
    torch.manual_seed(0)
    config = hf_config("wav2vec2", **{**PRETRAINING, **VARIANTS[request.param]})
    hf = perturb_(hf_class("wav2vec2", "ForPreTraining")(config))
    path = tmp_path_factory.mktemp("pretraining") / request.param
    hf.save_pretrained(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = w2v.load(path)
    return hf.to(device), ours.to(device)


@pytest.fixture(scope="module")
def batch(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(LENGTHS), max(LENGTHS), generator=g)
    lengths = torch.tensor(LENGTHS)
    frames = [w2v.num_frames(n) for n in LENGTHS]
    mask = compute_mask_indices(
        (len(LENGTHS), max(frames)), 0.5, 4, lengths=frames, min_masks=2, generator=g
    )
    negatives = sample_negative_indices(mask.shape, 5, mask_time_indices=mask, generator=g)
    return tuple(torch.as_tensor(t).to(device) for t in (x, lengths, mask, negatives))


def hf_outputs(hf, x, lengths, mask, negatives):
    attention = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
    return hf(
        x, attention_mask=attention, mask_time_indices=mask, sampled_negative_indices=negatives
    )


def test_load_keeps_every_pretraining_part(pair, tmp_path):
    hf, ours = pair
    if ours.pretraining.quantizer.codevectors.is_cuda:
        pytest.skip("loading is checked on the CPU")
    assert ours.pretraining is not None
    cfg = ours.pretraining.pretraining_config
    hc = hf.config
    assert (cfg.num_codevector_groups, cfg.num_codevectors_per_group) == (
        hc.num_codevector_groups, hc.num_codevectors_per_group,
    )  # fmt: skip
    assert (cfg.codevector_dim, cfg.final_dim) == (hc.codevector_dim, hc.proj_codevector_dim)
    ours_state = ours.state_dict()
    for name, value in hf.state_dict().items():
        assert torch.equal(ours_state[hf_to_w2v(name)], value), name
    # w2v convert keeps them too: the converted directory loads the same weights
    hf.save_pretrained(tmp_path / "src")
    w2v.loading.convert(tmp_path / "src", tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = w2v.load(tmp_path / "out").state_dict()
    assert again.keys() == ours_state.keys()
    assert all(torch.equal(again[k], v) for k, v in ours_state.items())


def test_eval_mode_equals_transformers(pair, batch):
    hf, ours = pair
    hf.eval()
    ours.eval()
    x, lengths, mask, negatives = batch
    with torch.no_grad():
        ref = hf_outputs(hf, x, lengths, mask, negatives)
        out = wav2vec2_loss(
            ours, x, lengths, mask_time_indices=mask, sampled_negative_indices=negatives,
            exact=False,
        )  # fmt: skip
        again = wav2vec2_loss(
            ours, x, lengths, mask_time_indices=mask, sampled_negative_indices=negatives,
            exact=False,
        )  # fmt: skip
    for key in ("loss", "contrastive_loss", "diversity_loss", "codevector_perplexity"):
        theirs = ref[key]
        assert out[key].dim() == 0
        torch.testing.assert_close(
            out[key], theirs, rtol=RTOL, atol=0, msg=lambda m, k=key: f"{k}: {m}"
        )
        assert torch.equal(out[key], again[key])  # deterministic in eval mode
    assert 0 < float(out["mask_fraction"]) < 1
    assert float(out["num_masked"]) == float(mask.sum())
    assert out["loss"].device == x.device


def test_train_mode_losses_and_gradients_equal_transformers(pair, batch):
    hf, ours = pair
    hf.train()
    ours.train()
    x, lengths, mask, negatives = batch
    hf.zero_grad()
    ours.zero_grad()
    torch.manual_seed(11)  # the Gumbel noise: the first random draw on both sides
    ref = hf_outputs(hf, x, lengths, mask, negatives)
    ref.loss.backward()
    torch.manual_seed(11)
    out = wav2vec2_loss(
        ours, x, lengths, mask_time_indices=mask, sampled_negative_indices=negatives, exact=False
    )
    out["loss"].backward()
    for key in ("loss", "contrastive_loss", "diversity_loss", "codevector_perplexity"):
        torch.testing.assert_close(
            out[key], ref[key], rtol=RTOL, atol=0, msg=lambda m, k=key: f"{k}: {m}"
        )
    ours_params = dict(ours.named_parameters())
    compared = 0
    for name, p in hf.named_parameters():
        mine = ours_params[hf_to_w2v(name)]
        if p.grad is None:
            assert mine.grad is None or not mine.grad.any(), name
            continue
        if name.endswith("attention.k_proj.bias"):
            # softmax ignores a shift shared by every key: this gradient is 0 up to rounding
            # on both sides (noise to noise), so only its size is checked
            assert (
                mine.grad.abs().max()
                < 1e-3
                * ours_params[hf_to_w2v(name).replace("k_proj.bias", "q_proj.bias")]
                .grad.abs()
                .max()
                + 1e-6
            )
            continue
        # relative to the gradient's norm: elementwise ratios of tiny entries are rounding
        error = (mine.grad - p.grad).norm() / p.grad.norm().clamp_min(1e-12)
        assert error < GRAD_RTOL, f"{name}: relative gradient error {error:.2e}"
        compared += 1
    assert compared > 30
    assert ours_params["pretraining.quantizer.codevectors"].grad.abs().sum() > 0
