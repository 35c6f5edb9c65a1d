"""Linear CKA: identity, invariances, the published formula, the Gram form used for many layers."""

from __future__ import annotations

import numpy as np
import pytest

from w2v.probe.cka import centred_gram, cka_grams, linear_cka

TOL = 1e-6


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. (2)-(3) as printed: HSIC(K, L) = tr(K H L H) / (n-1)²
    with linear kernels K = X Xᵀ, L = Y Yᵀ and centring matrix H = I - 11ᵀ/n;
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 12)) + 2.0
    y = x @ rng.standard_normal((12, 9)) + 0.5 * rng.standard_normal((60, 9))
    return x, y


def test_identity(data):
    x, _ = data
    assert abs(linear_cka(x, x) - 1.0) <= TOL


def test_orthogonal_and_isotropic_scaling_invariance(data):
    x, y = data
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    base = linear_cka(x, y)
    assert abs(linear_cka(x, y @ q) - base) <= TOL
    assert abs(linear_cka(x * 7.5, y) - base) <= TOL
    assert abs(linear_cka(x, 0.01 * y @ q) - base) <= TOL
    # a non-isotropic scaling is not an invariance: the test can tell them apart
    assert abs(linear_cka(x, y * np.linspace(0.1, 10, 9)) - base) > 1e-3


def test_matches_published_formula(data):
    x, y = data
    rng = np.random.default_rng(2)
    z = rng.standard_normal((60, 20))
    for a, b in ((x, y), (x, z), (y, z)):
        ref = hsic_cka(a, b)
        assert abs(linear_cka(a, b) - ref) <= TOL
        ga, gb = centred_gram(a), centred_gram(b)
        assert abs(cka_grams([ga], [gb])[0, 0] - ref) <= TOL


def test_gram_matrix_of_layers(data):
    x, y = data
    rng = np.random.default_rng(3)
    layers = [x, y, rng.standard_normal((60, 5))]
    grams = [centred_gram(a) for a in layers]
    m = cka_grams(grams)
    assert m.shape == (3, 3)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=TOL)
    np.testing.assert_allclose(m, m.T, atol=0)
    for i in range(3):
        for j in range(3):
            assert abs(m[i, j] - hsic_cka(layers[i], layers[j])) <= TOL
