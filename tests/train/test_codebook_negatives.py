"""fairseq's codebook negatives in ``wav2vec2_loss(style="fairseq")``: K random codevector
combinations per masked frame, through ``project_q``, after the sampled negatives."""

from __future__ import annotations

import pytest
import torch

from w2v.config import Config
from w2v.nn.model import Model
from w2v.nn.pretraining import PretrainingConfig
from w2v.train import compute_mask_indices, sample_negative_indices, wav2vec2_loss

G, V = 2, 3  # 9 combinations: few enough to list, so every draw can be checked
SAMPLED = 4


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    config = Config(
        conv_dim=(16,) * 7, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
        pos_conv_kernel=16, pos_conv_groups=2,
    )  # fmt: skip
    pcfg = PretrainingConfig(
        final_dim=16, codevector_dim=16, num_codevector_groups=G, num_codevectors_per_group=V
    )
    model = Model(config).add_pretraining(pcfg).eval()
    wave = torch.randn(2, 8000)
    g = torch.Generator().manual_seed(0)
    shape = (2, 24)
    mask = compute_mask_indices(shape, 0.5, 3, min_masks=2, generator=g, style="fairseq")
    negatives = sample_negative_indices(shape, SAMPLED, mask_time_indices=mask, generator=g)
    return model, wave, mask, negatives


def _loss(setup, **kw):
    model, wave, mask, negatives = setup
    return wav2vec2_loss(
        model, wave, mask_time_indices=mask, sampled_negative_indices=negatives,
        style="fairseq", **kw,
    )  # fmt: skip


def _seeded(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_logits_grow_by_k_after_the_sampled_ones(setup):
    plain = _loss(setup)
    more = _loss(setup, codebook_negatives=5, generator=_seeded())
    m = int(plain["num_masked"])
    assert plain["logits"].shape == (m, 1 + SAMPLED)
    assert more["logits"].shape == (m, 1 + SAMPLED + 5)
    # appended: the positive and the sampled negatives keep their columns, bit for bit
    assert torch.equal(more["logits"][:, : 1 + SAMPLED], plain["logits"])
    assert torch.isfinite(more["loss"]) and torch.isfinite(more["contrastive_loss"])


def test_k0_is_the_plain_loss_bit_for_bit_and_draws_nothing(setup):
    plain = _loss(setup)
    g = _seeded()
    before, global_before = g.get_state(), torch.get_rng_state()
    zero = _loss(setup, codebook_negatives=0, generator=g)
    assert plain.keys() == zero.keys()
    for k in plain:
        assert torch.equal(plain[k], zero[k]), k
    assert torch.equal(g.get_state(), before)
    assert torch.equal(torch.get_rng_state(), global_before)


def test_sample_from_codebook_takes_one_codevector_per_group(setup):
    quantizer = setup[0].pretraining.quantizer
    vectors, codes = quantizer.sample_from_codebook(9000, _seeded())
    book = quantizer.codevectors.detach().view(G, V, -1)
    rebuilt = torch.cat([book[gi][codes[:, gi]] for gi in range(G)], dim=-1)
    assert torch.equal(vectors, rebuilt)
    # uniform over the V**G combinations (expected 1000 each, standard deviation ~30)
    counts = torch.bincount(codes[:, 0] * V + codes[:, 1], minlength=V**G)
    assert len(counts) == V**G and int(counts.min()) > 850 and int(counts.max()) < 1150


def test_drawn_negatives_are_projected_codevector_combinations(setup):
    model, wave, mask, _ = setup
    k = 6
    out = _loss(setup, codebook_negatives=k, generator=_seeded())
    parts = model.pretraining
    with torch.no_grad():
        enc = model.encode(wave, time_mask=mask)
        predicted = parts.project_hid(enc.output[mask])  # (M, P)
        book = parts.quantizer.codevectors.view(G, V, -1)
        every = torch.cartesian_prod(torch.arange(V), torch.arange(V))  # (V**G, G)
        combos = torch.cat([book[0][every[:, 0]], book[1][every[:, 1]]], dim=-1)
        projected = parts.project_q(combos)  # (V**G, P)
        # the score of each combination for each masked frame: (M, V**G)
        scores = torch.cosine_similarity(predicted[:, None], projected[None], dim=-1) / 0.1
        own = parts.quantizer.logits(enc.features[mask]).argmax(-1)  # (M, G) eval mode's codes
    own = own[:, 0] * V + own[:, 1]
    scores[torch.arange(len(own)), own] = float("-inf")  # the positive itself is no mistake
    drawn = out["logits"].detach()[:, 1 + SAMPLED :]  # (M, K)
    assert drawn.shape == (len(own), k)
    gap = (drawn[:, :, None] - scores[:, None, :]).abs()  # (M, K, V**G)
    gap = torch.where(torch.isinf(drawn[:, :, None]) & torch.isinf(scores[:, None]), 0.0, gap)
    nearest = gap.nan_to_num(float("inf")).min(-1)
    assert float(nearest.values.max()) < 1e-4
    assert bool(torch.isinf(drawn).any()) and bool(torch.isfinite(drawn).any())


def test_seeded_generator_makes_it_deterministic(setup):
    a = _loss(setup, codebook_negatives=5, generator=_seeded(3))
    b = _loss(setup, codebook_negatives=5, generator=_seeded(3))
    c = _loss(setup, codebook_negatives=5, generator=_seeded(4))
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["loss"], b["loss"])
    assert not torch.equal(a["logits"], c["logits"])


def test_train_mode_loss_finite_with_gradients_to_the_codebook(setup):
    model = setup[0]
    model.train()
    try:
        out = _loss(setup, codebook_negatives=5, generator=_seeded())
        assert torch.isfinite(out["loss"])
        model.zero_grad()
        out["loss"].backward()
        grad = model.pretraining.quantizer.codevectors.grad
        assert grad is not None and bool(torch.isfinite(grad).all())
    finally:
        model.zero_grad()
        model.eval()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(codebook_negatives=2, style="hf"), "fairseq's option"),
        (dict(codebook_negatives=V**G), "below the codebook's 9"),
        (dict(codebook_negatives=-1), "integer >= 0"),
    ],
)
def test_rejects_bad_settings(setup, kw, message):
    model, wave, mask, negatives = setup
    kw = {"style": "fairseq", **kw}
    with pytest.raises(ValueError, match=message):
        wav2vec2_loss(model, wave, mask_time_indices=mask, sampled_negative_indices=negatives, **kw)


@pytest.mark.parametrize("style", ["hf", "fairseq"])
def test_a_mask_that_masks_nothing_is_a_clear_error(setup, style):
    model, wave, mask, negatives = setup
    with pytest.raises(ValueError, match="masks no frame"):
        wav2vec2_loss(
            model, wave, mask_time_indices=torch.zeros_like(mask),
            sampled_negative_indices=negatives, style=style,
        )  # fmt: skip
