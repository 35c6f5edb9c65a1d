"""Pooling looks at valid frames only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from w2v.pipeline.pooling import masked_mean, masked_stats, pool_layers


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(3, 7, 4, generator=g)
    lengths = torch.tensor([7, 4, 1])
    garbage = states.clone()
    for b, n in enumerate(lengths.tolist()):
        garbage[b, n:] = 1e6  # padded frames hold finite garbage
    return states, garbage, lengths


def test_mean_ignores_padding():
    states, garbage, lengths = _batch()
    got = masked_mean(garbage, lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(got[b], states[b, :n].mean(0))


def test_stats_is_mean_and_population_std():
    states, garbage, lengths = _batch(1)
    got = masked_stats(garbage, lengths)
    assert got.shape == (3, 8)
    for b, n in enumerate(lengths.tolist()):
        valid = states[b, :n].double()
        torch.testing.assert_close(got[b, :4].double(), valid.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            got[b, 4:].double(), valid.std(0, unbiased=False), rtol=1e-5, atol=1e-6
        )
    assert torch.all(got[2, 4:] == 0)  # one frame: std 0, not NaN


@pytest.mark.parametrize("pool", ["mean", "stats", "none"])
def test_pool_layers_shapes_and_values(pool):
    states, garbage, lengths = _batch(2)
    layers = [garbage, garbage * 2]
    out = pool_layers(layers, lengths, pool)
    assert len(out) == 3
    for b, n in enumerate(lengths.tolist()):
        assert out[b].dtype == np.float32
        valid = states[b, :n].numpy()
        if pool == "mean":
            assert out[b].shape == (2, 4)
            np.testing.assert_allclose(out[b][1], 2 * valid.mean(0), rtol=1e-5, atol=1e-6)
        elif pool == "stats":
            assert out[b].shape == (2, 8)
            np.testing.assert_allclose(out[b][0, 4:], valid.std(0), rtol=1e-4, atol=1e-6)
        else:
            assert out[b].shape == (2, n, 4)
            np.testing.assert_array_equal(out[b][0], valid)
            np.testing.assert_array_equal(out[b][1], 2 * valid)


def test_low_precision_states_are_pooled_in_float32():
    states, _, lengths = _batch(3)
    out = pool_layers([states.bfloat16()], lengths, "mean")
    assert out[0].dtype == np.float32
    with pytest.raises(ValueError, match="unknown pool"):
        pool_layers([states], lengths, "max")
