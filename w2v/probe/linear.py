"""Linear probes of one layer: cross-validated scores, a control task, nested regularisation.

Per outer fold: features standardised with the training part's mean and standard
deviation; the regularisation strength chosen by an inner cross-validation on the
training part (at most ``inner_max`` items of it, a seeded sample, so the search costs
the same for any corpus size); the probe refitted on the whole training part and scored
on the held-out part. The control task (labels shuffled within groups, see
:func:`control_labels`) is fitted in the same fold with the same strength, so the gap
between the two (the selectivity, Hewitt & Liang 2019) compares like with like.

Classes: L2-regularised multinomial logistic regression (lbfgs), strength ``C`` from
:data:`CS`, scored by accuracy, macro-F1 and unweighted average recall (the mean of the
per-class recalls). Numbers: ridge regression, ``alpha`` from :data:`ALPHAS`, scored by
R², Pearson's r and Lin's concordance correlation.

Folds: stratified by class for classes; with groups, no group is in two folds (checked
on every split). Every step is seeded, and BLAS runs on one thread inside a fit, so the
same data and seed give the same numbers on any machine with the same libraries.

scikit-learn is imported inside the functions that use it: with scipy, pandas and pyarrow
behind it, importing it costs every w2v command (the CLI imports the probe package) about
100 MB and most of a second.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from w2v.errors import UsageError

CLASS_METRICS = ("accuracy", "macro_f1", "uar")
NUMBER_METRICS = ("r2", "pearson", "ccc")
METRICS = {"class": CLASS_METRICS, "number": NUMBER_METRICS}
CS = (1e-3, 1e-2, 1e-1, 1.0)
"""Inverse L2 strengths tried for logistic regression (features standardised)."""
ALPHAS = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)
"""L2 strengths tried for ridge regression."""


@dataclass(frozen=True)
class ProbeOptions:
    folds: int = 5
    inner_folds: int = 3
    inner_max: int = 2000
    max_iter: int = 300
    seed: int = 0


Split = tuple[np.ndarray, np.ndarray]


def make_folds(
    y: np.ndarray, kind: str, groups: np.ndarray | None, folds: int, seed: int
) -> list[Split]:
    """Outer ``(train, test)`` index pairs: stratified for classes, grouped when ``groups``
    is given. :class:`UsageError` when there are fewer items or groups than folds."""
    n = len(y)
    if folds < 2:
        raise UsageError(f"--folds must be at least 2, got {folds}")
    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < folds:
            raise UsageError(f"{n_groups} groups cannot fill {folds} grouped folds; lower --folds")
    if n < folds:
        raise UsageError(f"{n} labelled items cannot fill {folds} folds; lower --folds")
    splitter = _splitter(kind, groups is not None, folds, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class smaller than the fold count
        try:
            splits = [
                (np.asarray(tr), np.asarray(te))
                for tr, te in splitter.split(np.zeros((n, 1)), y, groups)
            ]
        except ValueError as e:  # every class smaller than the fold count
            raise UsageError(
                f"cannot make {folds} folds of {n} items: {e}; lower --folds"
            ) from None
    if groups is not None:
        check_grouped(splits, groups)
    if kind == "class" and any(len(np.unique(y[train])) < 2 for train, _ in splits):
        raise UsageError(
            f"a training fold holds a single class ({n} items in {folds} folds); give more "
            "items per class or lower --folds"
        )
    return splits


def _splitter(kind: str, grouped: bool, folds: int, seed: int):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if kind == "class":
        if grouped:
            return StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        return StratifiedKFold(folds, shuffle=True, random_state=seed)
    if grouped:
        return GroupKFold(folds, shuffle=True, random_state=seed)
    return KFold(folds, shuffle=True, random_state=seed)


def check_grouped(splits: list[Split], groups: np.ndarray) -> None:
    """RuntimeError when a group has items on both sides of a split."""
    for k, (train, test) in enumerate(splits):
        shared = np.intersect1d(groups[train], groups[test])
        if len(shared):
            raise RuntimeError(f"fold {k}: group {shared[0]} is in both train and test")


def control_labels(y: np.ndarray, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """``y`` shuffled within each group (all of it as one group when ``groups`` is None):
    each group keeps its labels, but which item has which is chance."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    if groups is None:
        return out[rng.permutation(len(y))]
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = y[idx[rng.permutation(len(idx))]]
    return out


@dataclass
class LayerScores:
    """Fold scores of one layer: ``scores[metric]`` and ``control[metric]`` (folds,)."""

    scores: dict[str, list[float]] = field(default_factory=dict)
    control: dict[str, list[float]] = field(default_factory=dict)
    strengths: list[float] = field(default_factory=list)
    not_converged: int = 0


def probe_layer(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    splits: list[Split],
    y_control: np.ndarray | None,
    groups: np.ndarray | None,
    options: ProbeOptions,
) -> LayerScores:
    """Cross-validated scores of a linear probe of ``x`` (n, d) for ``y`` (n,): class codes
    (ints) for ``kind == "class"``, floats for ``"number"``."""
    from sklearn.exceptions import ConvergenceWarning

    out = LayerScores()
    for metric in METRICS[kind]:
        out.scores[metric], out.control[metric] = [], []
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for k, (train, test) in enumerate(splits):
            x_tr, x_te = _standardise(x[train], x[test])
            sub = _inner_sample(len(train), options.inner_max, options.seed + k)
            g_sub = None if groups is None else groups[train][sub]
            strength = _choose(x_tr[sub], y[train][sub], kind, g_sub, options)
            out.strengths.append(strength)
            targets = [y] if y_control is None else [y, y_control]
            preds = _fit_predict(x_tr, x_te, [t[train] for t in targets], kind, strength, options)
            for metric in METRICS[kind]:
                out.scores[metric].append(score(metric, y[test], preds[0]))
                if y_control is not None:
                    out.control[metric].append(score(metric, y_control[test], preds[1]))
    out.not_converged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return out


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0  # a constant feature carries nothing; keep it at zero
    scale = (1.0 / std).astype(np.float32)
    shift = mean.astype(np.float32)
    return (train - shift) * scale, (test - shift) * scale


def _inner_sample(n: int, max_items: int, seed: int) -> np.ndarray:
    if n <= max_items:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_items, replace=False))


def _choose(
    x: np.ndarray, y: np.ndarray, kind: str, groups: np.ndarray | None, options: ProbeOptions
) -> float:
    """The strength with the best mean inner-CV score (ties: the stronger regularisation)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    grid = CS if kind == "class" else ALPHAS
    n_groups = len(np.unique(groups)) if groups is not None else len(y)
    folds = min(options.inner_folds, n_groups)
    if kind == "class":
        folds = min(folds, int(np.bincount(y).max()))
    if folds < 2:
        return grid[len(grid) // 2]
    splitter = _splitter(kind, groups is not None, folds, options.seed)
    totals = np.zeros(len(grid))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(x, y, groups))
    for train, test in splits:
        if kind == "class" and len(np.unique(y[train])) < 2:
            continue  # nothing to fit; every strength scores alike on this split
        x_tr, x_te = _standardise(x[train], x[test])
        if kind == "class":
            model = LogisticRegression(C=grid[0], max_iter=options.max_iter, warm_start=True)
            for j, c in enumerate(grid):  # weak to strong fits, each from the last
                model.set_params(C=c)
                model.fit(x_tr, y[train])
                totals[j] += score("accuracy", y[test], model.predict(x_te))
        else:  # one factorisation, one target column per alpha
            ys = np.repeat(y[train][:, None], len(grid), axis=1)
            pred = Ridge(alpha=np.array(grid), solver="cholesky").fit(x_tr, ys).predict(x_te)
            for j in range(len(grid)):
                totals[j] += score("r2", y[test], pred[:, j])
    best = totals.max()
    # ties: the strongest regularisation (small C, large alpha)
    candidates = [j for j in range(len(grid)) if totals[j] >= best - 1e-12]
    return float(grid[candidates[0]] if kind == "class" else grid[candidates[-1]])


def _fit_predict(
    x_tr: np.ndarray,
    x_te: np.ndarray,
    targets: list[np.ndarray],
    kind: str,
    strength: float,
    options: ProbeOptions,
) -> list[np.ndarray]:
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "class":
        return [
            LogisticRegression(C=strength, max_iter=options.max_iter).fit(x_tr, t).predict(x_te)
            for t in targets
        ]
    model = Ridge(alpha=strength, solver="cholesky").fit(x_tr, np.stack(targets, axis=1))
    pred = model.predict(x_te).reshape(len(x_te), len(targets))  # one target comes back 1-D
    return [pred[:, j] for j in range(len(targets))]


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """One of :data:`CLASS_METRICS` or :data:`NUMBER_METRICS` (0 for a correlation that is
    undefined because one side is constant)."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, r2_score

    if metric == "accuracy":
        return float(np.mean(y_true == y_pred))
    if metric == "macro_f1":
        return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    if metric == "uar":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class predicted never seen
            return float(balanced_accuracy_score(y_true, y_pred))
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if metric == "r2":
        return float(r2_score(y_true, y_pred))
    if metric == "pearson":
        st, sp = y_true.std(), y_pred.std()
        if st == 0 or sp == 0:
            return 0.0
        return float(np.mean((y_true - y_true.mean()) * (y_pred - y_pred.mean())) / (st * sp))
    if metric == "ccc":
        mt, mp = y_true.mean(), y_pred.mean()
        cov = np.mean((y_true - mt) * (y_pred - mp))
        denom = y_true.var() + y_pred.var() + (mt - mp) ** 2
        return float(2 * cov / denom) if denom > 0 else 0.0
    raise ValueError(f"unknown metric {metric!r}")
