"""Learned layer weights put their mass on the layer that holds the signal."""

from __future__ import annotations

import numpy as np
import pytest

from tests.probe.synthetic import planted
from w2v.probe.weights import learn_layer_weights


@pytest.mark.parametrize("kind", ["class", "number"])
def test_weights_find_the_signal_layer(kind):
    arrays, y = planted(n=300, layers=5, dim=16, signal_layer=3, classes=3, seed=0)
    x = np.stack(arrays)
    target = y if kind == "class" else y.astype(float)
    w = learn_layer_weights([x[:, i] for i in range(5)], target, kind, seed=0)
    assert w.shape == (5,) and abs(w.sum() - 1.0) < 1e-5
    assert int(np.argmax(w)) == 3 and w[3] > 0.5, w
    again = learn_layer_weights([x[:, i] for i in range(5)], target, kind, seed=0)
    np.testing.assert_array_equal(w, again)
