"""Span masks and negatives: statistics, padding, determinism, and the index conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from w2v.train import (
    compute_mask_indices,
    expected_mask_fraction,
    sample_negative_indices,
    spec_augment,
)


def test_mask_fraction_is_what_the_formula_predicts():
    expected = expected_mask_fraction(500, 0.65, 10)
    assert abs(expected - 0.49) < 0.01  # the figure the README states
    g = torch.Generator().manual_seed(0)
    mask = compute_mask_indices((20, 500), 0.65, 10, generator=g)  # 10,000 frames
    assert abs(mask.float().mean().item() - expected) < 0.02
    # fairseq's scheme, one item at a time (no trimming to the batch's fewest)
    fs = torch.cat(
        [compute_mask_indices((1, 500), 0.65, 10, generator=g, style="fairseq") for _ in range(20)]
    )
    expected_fs = expected_mask_fraction(500, 0.65, 10, style="fairseq")
    assert abs(fs.float().mean().item() - expected_fs) < 0.02


def test_mask_fraction_matches_transformers_statistically():
    transformers = pytest.importorskip("transformers")

    mw = transformers.models.wav2vec2.modeling_wav2vec2
    np.random.seed(0)
    theirs = np.mean([mw._compute_mask_indices((1, 300), 0.3, 5).mean() for _ in range(60)])
    g = torch.Generator().manual_seed(0)
    ours = torch.stack(
        [compute_mask_indices((1, 300), 0.3, 5, generator=g).float().mean() for _ in range(60)]
    ).mean()
    assert abs(ours.item() - theirs) < 0.02
    assert abs(ours.item() - expected_mask_fraction(300, 0.3, 5)) < 0.02


@pytest.mark.parametrize("style", ["hf", "fairseq"])
def test_masks_respect_lengths_and_generator(style):
    lengths = [100, 57, 31]
    g = torch.Generator().manual_seed(3)
    a = compute_mask_indices(
        (3, 100), 0.4, 5, lengths=lengths, min_masks=2, generator=g, style=style
    )
    g = torch.Generator().manual_seed(3)
    b = compute_mask_indices(
        (3, 100), 0.4, 5, lengths=lengths, min_masks=2, generator=g, style=style
    )
    assert torch.equal(a, b)
    for row, n in zip(a, lengths, strict=True):
        assert not row[n:].any()  # padding is never masked
        assert row[:n].sum() >= 5  # min_masks=2 spans of 5, overlapping at worst
    if style == "fairseq":  # require_same_masks: every item keeps the fewest's count
        assert len(set(a.sum(1).tolist())) == 1


def test_mask_arguments_are_checked():
    with pytest.raises(ValueError, match="mask_length"):
        compute_mask_indices((1, 5), 0.5, 10)
    with pytest.raises(ValueError, match="lengths"):
        compute_mask_indices((2, 50), 0.5, 5, lengths=[50, 51])
    with pytest.raises(ValueError, match="style"):
        compute_mask_indices((2, 50), 0.5, 5, style="espnet")


def test_negatives_over_1000_random_padded_batches():
    g = torch.Generator().manual_seed(0)
    for _ in range(1000):
        batch = int(torch.randint(1, 5, (), generator=g))
        frames = int(torch.randint(20, 80, (), generator=g))
        lengths = torch.randint(12, frames + 1, (batch,), generator=g)
        lengths[0] = frames
        mask = compute_mask_indices(
            (batch, frames), 0.5, 4, lengths=lengths, min_masks=2, generator=g
        )
        k = int(torch.randint(1, 10, (), generator=g))
        neg = sample_negative_indices((batch, frames), k, mask_time_indices=mask, generator=g)
        assert neg.shape == (batch, frames, k) and neg.dtype == torch.long
        b, t = mask.nonzero(as_tuple=True)
        drawn = neg[b, t]  # (M, K) flattened indices of the masked frames' negatives
        own = (b * frames + t)[:, None]
        assert not (drawn == own).any()  # never the positive itself
        assert ((drawn // frames) == b[:, None]).all()  # never another utterance
        assert ((drawn % frames) < lengths[b][:, None]).all()  # never padding
        assert mask.flatten()[drawn].all()  # always a masked frame


def test_negatives_are_uniform_over_the_other_masked_frames():
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, [1, 4, 6]] = True
    g = torch.Generator().manual_seed(0)
    neg = sample_negative_indices((1, 10), 3000, mask_time_indices=mask, generator=g)
    counts = torch.bincount(neg[0, 4], minlength=10)
    assert counts[4] == 0 and counts[[0, 2, 3, 5, 7, 8, 9]].sum() == 0
    assert abs(counts[1].item() - 1500) < 150 and abs(counts[6].item() - 1500) < 150


def test_cross_sample_negatives_and_errors():
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, 2:6] = True
    g = torch.Generator().manual_seed(0)
    neg = sample_negative_indices(
        (2, 8), 2, mask_time_indices=mask, generator=g, cross_sample_negatives=50
    )
    assert neg.shape == (2, 8, 52)
    cross = neg[:, 2:6, 2:]
    assert mask.flatten()[cross].all()
    assert (cross // 8 == 1).any() and (cross // 8 == 0).any()  # from both utterances
    own = (torch.arange(2)[:, None] * 8 + torch.arange(2, 6))[..., None]
    assert not (cross == own).any()
    one = torch.zeros(1, 8, dtype=torch.bool)
    one[0, 3] = True
    with pytest.raises(ValueError, match="one masked frame"):
        sample_negative_indices((1, 8), 2, mask_time_indices=one)


def test_spec_augment_uses_transformers_defaults():
    g = torch.Generator().manual_seed(0)
    time_mask, feature_mask = spec_augment([200, 120], 768, generator=g)
    assert feature_mask is None  # mask_feature_prob defaults to 0
    assert time_mask.shape == (2, 200) and not time_mask[1, 120:].any()
    assert time_mask[1].sum() >= 10  # mask_time_min_masks=2 spans of mask_time_length=10
    time_mask, feature_mask = spec_augment(
        [50], 32, mask_time_prob=0.0, mask_feature_prob=0.3, mask_feature_length=4, generator=g
    )
    assert time_mask is None and feature_mask.shape == (1, 32) and feature_mask.any()
