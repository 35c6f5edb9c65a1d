"""Linear probes: a planted signal is found at its layer, shuffled labels score chance,
grouped folds keep every group on one side."""

from __future__ import annotations

import numpy as np
import pytest

from tests.probe.synthetic import planted
from w2v.probe.linear import (
    ProbeOptions,
    check_grouped,
    control_labels,
    make_folds,
    probe_layer,
    score,
)

OPTIONS = ProbeOptions(folds=4, inner_folds=3)


def _best_layer(x: np.ndarray, y: np.ndarray, kind: str, seed: int) -> tuple[int, list[float]]:
    splits = make_folds(y, kind, None, OPTIONS.folds, seed)
    means = []
    for layer in range(x.shape[1]):
        s = probe_layer(x[:, layer], y, kind, splits, None, None, OPTIONS)
        means.append(float(np.mean(s.scores["accuracy" if kind == "class" else "r2"])))
    return int(np.argmax(means)), means


@pytest.mark.parametrize("seed", range(5))
def test_planted_signal_is_found_at_its_layer(seed):
    k = seed % 4  # the signal moves from layer to layer with the seed
    arrays, y = planted(n=240, layers=4, dim=12, signal_layer=k, classes=3, seed=seed)
    best, means = _best_layer(np.stack(arrays), y, "class", seed)
    assert best == k, means
    assert means[k] > 0.9


@pytest.mark.parametrize("seed", range(3))
def test_planted_regression_signal(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, 3, 8)).astype(np.float32)
    y = x[:, 1, :3].sum(axis=1) + 0.3 * rng.standard_normal(200)
    best, means = _best_layer(x, y, "number", seed)
    assert best == 1 and means[1] > 0.8, means


def test_shuffled_labels_score_chance():
    """Three balanced classes: chance accuracy is 1/3. With 240 items a fold's accuracy has
    a standard error of about 0.06 and the mean of 4 folds about 0.03; the band
    [0.20, 0.47] is that mean ± 4 standard errors."""
    arrays, y = planted(n=240, layers=4, dim=12, signal_layer=2, classes=3, seed=0)
    x = np.stack(arrays)[:, 2]  # the layer that holds the signal for the true labels
    shuffled = control_labels(y, None, seed=7)
    splits = make_folds(shuffled, "class", None, OPTIONS.folds, 0)
    s = probe_layer(x, shuffled, "class", splits, None, None, OPTIONS)
    assert 0.20 <= np.mean(s.scores["accuracy"]) <= 0.47
    assert 0.20 <= np.mean(s.scores["uar"]) <= 0.47


def test_control_task_is_reported_beside_the_task():
    arrays, y = planted(n=240, layers=4, dim=12, signal_layer=2, classes=3, seed=1)
    groups = np.arange(240) % 24
    control = control_labels(y, groups, seed=3)
    for g in range(24):  # each group keeps its labels, shuffled among its items
        assert sorted(control[groups == g]) == sorted(y[groups == g])
    splits = make_folds(y, "class", groups, 4, 0)
    s = probe_layer(np.stack(arrays)[:, 2], y, "class", splits, control, groups, OPTIONS)
    assert np.mean(s.scores["accuracy"]) > 0.9
    assert np.mean(s.control["accuracy"]) < 0.5


@pytest.mark.parametrize("kind", ["class", "number"])
def test_grouped_folds_are_disjoint(kind):
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=500)
    y = rng.integers(0, 4, size=500) if kind == "class" else rng.standard_normal(500)
    splits = make_folds(y, kind, groups, 5, seed=1)
    assert len(splits) == 5
    seen = {}
    for k, (train, test) in enumerate(splits):
        assert not set(groups[train]) & set(groups[test])
        for g in set(groups[test]):
            assert g not in seen, f"group {g} in folds {seen[g]} and {k}"
            seen[g] = k
    assert sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(500))


def test_check_grouped_catches_a_shared_group():
    groups = np.array([0, 0, 1, 1])
    with pytest.raises(RuntimeError, match="group 0 is in both train and test"):
        check_grouped([(np.array([0, 2]), np.array([1, 3]))], groups)


def test_metrics_on_hand_computed_cases():
    y = np.array([0, 0, 0, 1])
    p = np.array([0, 0, 1, 1])
    assert score("accuracy", y, p) == 0.75
    assert score("uar", y, p) == pytest.approx((2 / 3 + 1) / 2)
    assert score("macro_f1", y, p) == pytest.approx((0.8 + 2 / 3) / 2)
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert score("pearson", t, 2 * t + 1) == pytest.approx(1.0)
    assert score("r2", t, t) == 1.0
    # CCC penalises the offset that Pearson ignores: 2 cov / (var + var + (mean diff)^2)
    assert score("ccc", t, t + 1) == pytest.approx(2 * 1.25 / (1.25 + 1.25 + 1.0))
