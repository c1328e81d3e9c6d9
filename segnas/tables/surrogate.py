"""The surrogate of a benchmark table whose space is too large to tabulate whole (auxcell, the
Auto-DeepLab discrete space): scikit-learn's random forest on the one-hot decisions of each
architecture, and its Kendall tau on out-of-fold predictions (NAS-Bench-301's approach).

Every decision is a category (an op, an input, a position, a stride), so one-hot features with
trees need no scaling and handle the interactions of an op with where it sits. The tau is
measured k-fold (k = 1 / holdout): every architecture is predicted by a forest that never saw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segnas.errors import ConfigError
from segnas.report.statistics import kendall

#: The forest: enough trees that the out-of-fold tau no longer moves with the seed.
FOREST = {"n_estimators": 200, "min_samples_leaf": 2, "max_features": 0.3, "random_state": 0, "n_jobs": 1}


def features(genes: np.ndarray, choices: Sequence[int]) -> np.ndarray:
    """One-hot of every decision (rows: architectures; decision k takes ``choices[k]`` values)."""
    genes = np.atleast_2d(np.asarray(genes, dtype=int))
    offsets = np.concatenate([[0], np.cumsum(choices)[:-1]])
    out = np.zeros((len(genes), int(sum(choices))), dtype=np.float32)
    out[np.arange(len(genes))[:, None], offsets + genes] = 1.0
    return out


def fit(
    genes: Sequence[Sequence[int]], scores: Sequence[float], choices: Sequence[int], holdout: float, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """(forest fitted on every architecture, its out-of-fold Kendall tau, CI and RMSE against
    ``scores``)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    X = features(np.array(genes), choices)
    y = np.asarray(scores, dtype=float)
    folds = max(2, round(1.0 / holdout))
    if len(y) < 2 * folds:
        raise ConfigError(
            f"the table holds {len(y)} architectures: too few to fit and test a surrogate on {folds} folds"
        )
    predicted = cross_val_predict(
        RandomForestRegressor(**FOREST), X, y, cv=KFold(folds, shuffle=True, random_state=seed)
    )
    report = {
        "model": "sklearn RandomForestRegressor",
        "settings": FOREST,
        "features": "one-hot decisions",
        "folds": folds,
        **kendall(predicted, y, seed=seed),
        "rmse": float(np.sqrt(np.mean((predicted - y) ** 2))),
    }
    return RandomForestRegressor(**FOREST).fit(X, y), report
