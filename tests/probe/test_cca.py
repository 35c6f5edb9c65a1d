"""SVCCA: invariances, and the canonical correlations of the textbook eigen-problem."""

from __future__ import annotations

import numpy as np

from w2v.probe.cca import canonical_correlations, svcca

TOL = 1e-6


def _reduce(x, k):
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :k] * s[:k]


def test_identity_and_invariances():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 30)) @ rng.standard_normal((30, 30))
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    assert abs(svcca(x, x, dims=10) - 1.0) <= TOL
    assert abs(svcca(x, 4.0 * x @ q + 3.0, dims=10) - 1.0) <= TOL
    noise = rng.standard_normal((200, 30))
    assert svcca(x, noise, dims=5) < 0.4


def test_matches_the_eigen_problem():
    """rho² are the eigenvalues of Sxx⁻¹ Sxy Syy⁻¹ Syx on the reduced data."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 12))
    y = x[:, :6] @ rng.standard_normal((6, 9)) + rng.standard_normal((300, 9))
    k = 5
    a, b = _reduce(x, k), _reduce(y, k)
    sxx, syy, sxy = a.T @ a, b.T @ b, a.T @ b
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    expected = np.sqrt(np.sort(np.linalg.eigvals(m).real)[::-1])
    np.testing.assert_allclose(canonical_correlations(x, y, dims=k), expected, atol=TOL)
