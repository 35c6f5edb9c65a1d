"""SVCCA (Raghu et al., 2017): canonical correlation between representations after each is
reduced to its top principal directions.

Plain CCA of two 768-dim representations on a few thousand items finds correlations near 1
by chance; keeping only the ``dims`` leading principal directions of each side first (SVD
of the centred data) makes the mean canonical correlation a stable summary. The canonical
correlations are the singular values of ``Qxᵀ Qy`` for orthonormal bases ``Qx``, ``Qy`` of
the two reduced, centred representations (Björck & Golub, 1973).
"""

from __future__ import annotations

import numpy as np

DEFAULT_DIMS = 20


def _top_directions(x: np.ndarray, dims: int) -> np.ndarray:
    """(n, k) orthonormal basis of the span of ``x``'s ``k = min(dims, rank)`` leading
    principal directions (columns centred)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    rank = int(np.sum(s > s[0] * 1e-10)) if s.size and s[0] > 0 else 0
    return u[:, : min(dims, rank)]


def canonical_correlations(x: np.ndarray, y: np.ndarray, dims: int = DEFAULT_DIMS) -> np.ndarray:
    """Canonical correlations (descending) of ``x`` (n, p) and ``y`` (n, q) reduced to their
    ``dims`` leading principal directions."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CCA needs the same items on both sides: {x.shape[0]} vs {y.shape[0]}")
    qx, qy = _top_directions(x, dims), _top_directions(y, dims)
    if qx.shape[1] == 0 or qy.shape[1] == 0:
        return np.zeros(0)
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def svcca(x: np.ndarray, y: np.ndarray, dims: int = DEFAULT_DIMS) -> float:
    """Mean canonical correlation of the SVD-reduced representations (0 when either is
    constant)."""
    rho = canonical_correlations(x, y, dims)
    return float(rho.mean()) if rho.size else 0.0
