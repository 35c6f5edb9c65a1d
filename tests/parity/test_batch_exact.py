"""Batching is exact: a padded batch with ``lengths`` gives each item's unbatched output.

Reference: transformers run on each item alone. ``exact=False`` instead
reproduces transformers' own batched numbers (padding leaks into GroupNorm
statistics, the HuBERT BatchNorm and the data2vec positional stack). Models
are random-init at real widths but reduced depth, so every family and both
conv norm modes stay cheap on a CPU.
"""

from __future__ import annotations

import gc

import pytest
import torch
from w2v.convert.hf import config_from_hf, convert_hf_state_dict

from tests.helpers import hf_class, hf_config, perturb_
from w2v import num_frames
from w2v.nn.model import Model

pytest.importorskip("transformers")

# each item alone vs. in the batch: our padding handling against HF's unbatched run
ATOL_EXACT = {torch.float32: 2e-5}
# exact=False vs. HF's batched run with an attention mask. Both sides are fp32 roundings of
# the same function (measured against a float64 run of transformers: each side ~9e-6 off at
# layer 0 of data2vec-audio, so they can differ by ~1.3e-5).
ATOL_BATCHED = {torch.float32: 2e-5}
DTYPE = torch.float32
# data2vec-audio's positional stack (five convolutions, each followed by a LayerNorm without
# affine) magnifies the conv features' rounding. On a CPU w2v's conv layers are oneDNN's
# direct convolution, whose fp32 sums are about 8e-6 off a float64 run at the conv features
# (the product form it replaced: 4e-6); after the stack, w2v's layers are 1.5-2.5e-5 off
# float64 where transformers' are 7-8e-6, so the two fp32 runs differ by up to 2.5e-5.
WIDER = {"data2vec-audio": 3e-5}


def atol(name: str, table: dict[torch.dtype, float]) -> float:
    return max(table[DTYPE], WIDER.get(name, 0.0))


DEPTH = 3
BASE = dict(num_hidden_layers=DEPTH)
LARGE = dict(BASE, hidden_size=1024, num_attention_heads=16, intermediate_size=4096)
LAYER_PRE_LN = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
VARIANTS = {
    "wav2vec2-group": ("wav2vec2", BASE),
    "wav2vec2-layer": ("wav2vec2", dict(LARGE, **LAYER_PRE_LN, conv_bias=True)),
    "hubert": ("hubert", BASE),
    "hubert-bn": ("hubert", dict(BASE, conv_pos_batch_norm=True, feat_proj_layer_norm=False)),
    "data2vec-audio": ("data2vec-audio", BASE),
    "wavlm-base": ("wavlm", BASE),
    "wavlm-large": ("wavlm", dict(LARGE, **LAYER_PRE_LN)),
}
# one item just above the 400-sample minimum (1 frame), one of 2 s
LENGTHS = [12345, 401, 32000, 20001]
# where the reference's padding leaks into valid frames (GroupNorm over time,
# BatchNorm of zeros, data2vec's positional stack), so exact and inexact differ
LEAKY = {"wav2vec2-group", "hubert", "hubert-bn", "data2vec-audio", "wavlm-base"}


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor(LENGTHS)
    x = torch.zeros(len(LENGTHS), max(LENGTHS))
    for j, n in enumerate(LENGTHS):
        x[j, :n] = 0.3 * torch.randn(n, generator=g)
    return x, lengths


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, batch):
    """Everything computed once per variant: the HF model, our model, HF outputs for each
    item alone and for the masked batch, and our batched outputs (exact and not)."""
    family, overrides = VARIANTS[request.param]
    torch.manual_seed(0)
    config = hf_config(family, tiny=False, **overrides)
    hf = perturb_(hf_class(family)(config))
    ours_config, _ = config_from_hf(config.to_dict())
    state, _ = convert_hf_state_dict(hf.state_dict(), ours_config, family)
    ours = Model(ours_config).eval()
    ours.load_state_dict(state, strict=True)

    x, lengths = batch
    with torch.inference_mode():
        r = dict(name=request.param, hf=hf, ours=ours)
        r["alone"] = [
            hf(x[j : j + 1, :n], output_hidden_states=True) for j, n in enumerate(LENGTHS)
        ]
        mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long()
        r["batched"] = hf(x, attention_mask=mask, output_hidden_states=True)
        r["exact"], r["frames"] = ours.hidden_states(x, lengths)  # exact is the default
        r["output"], r["output_frames"] = ours(x, lengths)
        r["inexact"], r["inexact_frames"] = ours.hidden_states(x, lengths, exact=False)
    yield r
    r.clear()
    gc.collect()


def max_diff(ours: torch.Tensor, refs: list[torch.Tensor], frames: list[int]) -> float:
    """Max |ours[j] - refs[j]| over item j's valid frames; ours (B, T, D), refs[j] (1, T_j, D)."""
    return max((ours[j, :n] - refs[j][0, :n]).abs().max().item() for j, n in enumerate(frames))


def test_frame_lengths_match_reference(variant, batch):
    _, lengths = batch
    expected = variant["hf"]._get_feat_extract_output_lengths(lengths).tolist()
    assert expected == [num_frames(n) for n in LENGTHS]
    assert expected == [a.last_hidden_state.shape[1] for a in variant["alone"]]
    assert expected[1] == 1  # 401 samples
    for key in ("frames", "output_frames", "inexact_frames"):
        assert variant[key].tolist() == expected, key


def test_batched_equals_each_item_alone(variant):
    name, frames = variant["name"], variant["frames"].tolist()
    assert len(variant["exact"]) == DEPTH + 1
    diffs = {
        i: max_diff(s, [a.hidden_states[i] for a in variant["alone"]], frames)
        for i, s in enumerate(variant["exact"])
    }
    bad = {i: d for i, d in diffs.items() if not d <= atol(name, ATOL_EXACT)}
    assert not bad, f"{name}: layers whose valid frames differ from the item run alone: {bad}"
    diff = max_diff(variant["output"], [a.last_hidden_state for a in variant["alone"]], frames)
    assert diff <= atol(name, ATOL_EXACT), (
        f"{name}: output differs from the item run alone by {diff}"
    )


def test_inexact_reproduces_reference_batch(variant):
    name, frames = variant["name"], variant["frames"].tolist()
    refs = variant["batched"].hidden_states
    assert len(refs) == len(variant["inexact"])
    for i, (s, ref) in enumerate(zip(variant["inexact"], refs, strict=True)):
        for j, n in enumerate(frames):
            torch.testing.assert_close(
                s[j, :n], ref[j, :n], atol=atol(name, ATOL_BATCHED), rtol=0,
                msg=lambda m, i=i, j=j: f"{name} exact=False, layer {i} item {j}: {m}",
            )  # fmt: skip


def test_exact_differs_from_reference_batch_only_where_it_leaks(variant):
    """Guards the two tests above: they must not pass because exact and inexact coincide."""
    frames = variant["frames"].tolist()
    inexact = variant["inexact"][-1]
    diff = max_diff(variant["exact"][-1], [inexact[j : j + 1] for j in range(len(frames))], frames)
    if variant["name"] in LEAKY:
        assert diff > 100 * ATOL_EXACT[DTYPE]
    else:
        assert diff <= ATOL_EXACT[DTYPE]


@torch.inference_mode()
@pytest.mark.parametrize("k", range(1, DEPTH))
def test_extract_features_stops_early(variant, batch, k):
    ours = variant["ours"]
    x, lengths = batch[0][:2, :12345], torch.tensor([12345, 401])
    ran: list[int] = []
    hooks = [
        layer.register_forward_hook(lambda *_, i=i: ran.append(i))
        for i, layer in enumerate(ours.encoder.layers, start=1)
    ]
    try:
        feats, _ = ours.extract_features(x, lengths, num_layers=k)
    finally:
        for h in hooks:
            h.remove()
    assert ran == list(range(1, k + 1))
    assert len(feats) == k
    full, _ = ours.hidden_states(x, lengths, layers=range(1, k + 1))
    for a, b in zip(feats, full, strict=True):
        assert torch.equal(a, b)
