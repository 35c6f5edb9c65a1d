"""Linear centered kernel alignment (CKA; Kornblith et al., 2019) between representations.

For representations ``X`` (n, p) and ``Y`` (n, q) of the same n items, with columns
centred, linear CKA is ``||Yᵀ X||_F² / (||Xᵀ X||_F ||Yᵀ Y||_F)``, which equals
``<K, L> / (||K|| ||L||)`` for the centred Gram matrices ``K = Xc Xcᵀ``, ``L = Yc Ycᵀ``
(the HSIC form of the paper with its ``1/(n-1)²`` factors cancelled). It is 1 for
``X = Y``, invariant to orthogonal transforms and isotropic scaling of either side.

Many layers against many: the Gram form costs ``n² p`` once per layer and ``n²`` per pair,
where the feature form costs ``n p q`` per pair, so :func:`cka_matrix` uses Grams, on at
most ``max_items`` items (a seeded sample; Grams of 2,000 items are 32 MB each).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_ITEMS = 2000


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of ``x`` (n, p) and ``y`` (n, q), in float64, feature form."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same items on both sides: {x.shape[0]} vs {y.shape[0]}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else 0.0


def centred_gram(x: np.ndarray) -> np.ndarray:
    """(n, n) Gram matrix of ``x`` (n, p) with its columns centred, scaled to unit Frobenius
    norm (so the CKA of two is their inner product); computed in float64, kept in float32
    (half the memory; the CKA it gives is within 1e-6 of float64's)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    k = x @ x.T
    norm = np.linalg.norm(k)
    return (k / norm if norm > 0 else k).astype(np.float32)


def cka_grams(a: Sequence[np.ndarray], b: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(len(a), len(b)) CKA between unit-norm centred Grams (``b``: ``a`` itself, whose
    matrix is then symmetric with ones on its diagonal)."""
    same = b is None
    b = a if b is None else b
    out = np.zeros((len(a), len(b)))
    for i, ga in enumerate(a):
        for j, gb in enumerate(b):
            if same and j < i:
                out[i, j] = out[j, i]
            elif same and i == j:
                out[i, j] = 1.0 if np.any(ga) else 0.0
            else:
                out[i, j] = np.dot(ga.ravel().astype(np.float64), gb.ravel().astype(np.float64))
    return out


def sample_items(n: int, max_items: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_items`` of ``n`` items, the same for the same seed."""
    if n <= max_items:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_items, replace=False))
