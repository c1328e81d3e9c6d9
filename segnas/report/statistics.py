"""Paired statistics of a comparison over seeds: is one method's score above another's by more
than the seeds' spread?

Runs of two methods with the same seed share the data split and the initialisation, so the
comparison is of paired differences ``a[seed] - b[seed]`` (Li & Talwalkar 2019 and Yang et al.
2020 show that NAS-vs-random gaps are a fraction of a point, far below the seed spread of an
unpaired difference of means). For each pair this module gives the mean difference with a
bootstrap percentile confidence interval, the Wilcoxon signed-rank p-value (scipy's, exact for
the seed counts a comparison affords), the relative improvement (Yang et al.:
``100 · (mean a − mean b) / mean b``), whether the difference is resolved at the level (the
interval excludes 0 *and* the signed-rank test rejects at that level: a percentile bootstrap of
5 points gives intervals far too narrow, while with n seeds the exact two-sided test cannot go
below ``2 / 2^n``, 0.0625 at 5, so 5 seeds resolve nothing at 95 %), and how many seeds a
difference of this size would need to be resolved, from the observed spread of the differences
(normal approximation, 80 % power).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

#: The power at which ``seeds_needed`` resolves a true difference of the observed size.
POWER = 0.8


def bootstrap_ci(
    differences: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value; None with fewer than two non-zero differences
    (nothing to rank), 1.0 when every difference is zero."""
    if not np.any(differences):
        return 1.0
    if np.count_nonzero(differences) < 2:
        return None
    return float(stats.wilcoxon(differences, alternative="two-sided").pvalue)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided exact signed-rank p-value ``n`` non-zero differences can give (all of
    one sign): ``2 / 2^n``."""
    return min(1.0, 2.0 / 2.0**n)


def rank_test_seeds(level: float = 0.95) -> int:
    """The fewest seeds whose signed-rank test can reject at ``level``."""
    n = 1
    while wilcoxon_floor(n) >= 1.0 - level:
        n += 1
    return n


def seeds_needed(mean: float, sd: float, level: float = 0.95, power: float = POWER) -> int | None:
    """Seeds at which a paired difference of ``mean`` with spread ``sd`` is resolved at ``level``
    with ``power``: ``((z_{1-α/2} + z_power) · sd / |mean|)²`` (at least 2); None for no difference."""
    if mean == 0 or not math.isfinite(mean) or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    z = stats.norm.ppf(1.0 - (1.0 - level) / 2.0) + stats.norm.ppf(power)
    return max(2, math.ceil((z * sd / abs(mean)) ** 2))


def paired(
    a: Mapping[Any, float | None],
    b: Mapping[Any, float | None],
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The paired comparison of ``a`` against ``b`` (both keyed by seed) over the seeds where both
    have a number."""
    seeds = sorted(k for k in a if k in b and _number(a[k]) and _number(b[k]))
    result: dict[str, Any] = {"n": len(seeds), "seeds": seeds, "level": level}
    if not seeds:
        return {**result, "mean": None}
    first = np.array([float(a[k]) for k in seeds])
    second = np.array([float(b[k]) for k in seeds])
    differences = first - second
    mean = float(differences.mean())
    sd = float(differences.std(ddof=1)) if len(seeds) > 1 else None
    low, high = bootstrap_ci(differences, level, resamples, seed) if len(seeds) > 1 else (None, None)
    baseline = float(second.mean())
    p = wilcoxon_p(differences)
    result.update(
        {
            "mean": mean,
            "sd": sd,
            "ci_low": low,
            "ci_high": high,
            "wilcoxon_p": p,
            "relative_improvement_pct": 100.0 * (float(first.mean()) - baseline) / baseline if baseline else None,
            "resolved": bool(low is not None and (low > 0 or high < 0) and p is not None and p < 1.0 - level),
            "seeds_needed": seeds_needed(mean, sd, level) if sd is not None else None,
        }
    )
    return result


def unpaired(
    a: np.ndarray, b: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """``mean a - mean b`` of two independent samples (a replay's runs of two algorithms share
    only the seed's number, nothing that makes them pairs): a percentile bootstrap interval that
    resamples each sample on its own, and the two-sided Mann-Whitney U p-value (scipy's)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means_a - means_b, [tail, 100.0 - tail])
    same = np.all(a == a[0]) and np.all(b == a[0])
    p = 1.0 if same else float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return {
        "n_a": len(a),
        "n_b": len(b),
        "level": level,
        "mean": float(a.mean() - b.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "mannwhitney_p": p,
        "resolved": bool(low > 0 or high < 0),
    }


def kendall(x: np.ndarray, y: np.ndarray, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Kendall's tau of ``x`` against ``y`` (scipy's tau-b) with a percentile bootstrap interval
    over the pairs, and Spearman's rho: how far one ranking of architectures can stand for another."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    tau = stats.kendalltau(x, y)
    rng = np.random.default_rng(seed)
    draws = [
        stats.kendalltau(x[i], y[i]).statistic for i in (rng.integers(0, len(x), len(x)) for _ in range(resamples))
    ]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.nanpercentile(draws, [tail, 100.0 - tail])
    return {
        "n": len(x),
        "kendall_tau": float(tau.statistic),
        "tau_p": float(tau.pvalue),
        "tau_ci": [float(low), float(high)],
        "spearman_rho": float(stats.spearmanr(x, y).statistic),
        "level": level,
    }


def describe(name: str, comparison: dict[str, Any], digits: int = 4) -> str:
    """One sentence for comparison.md: the difference, its interval and p-value, and whether it
    is resolved (and, if not, how many seeds a difference this size would need)."""
    n = comparison["n"]
    if comparison["mean"] is None:
        return f"- {name}: no seed where both finished"
    text = f"- {name}: {comparison['mean']:+.{digits}f} over {n} paired seed{'s' if n != 1 else ''}"
    if comparison.get("ci_low") is None:
        return text + ": one seed, no spread to judge it by"
    level = round(100 * comparison["level"])
    p = comparison["wilcoxon_p"]
    text += (
        f" ({level} % bootstrap CI {comparison['ci_low']:+.{digits}f} … {comparison['ci_high']:+.{digits}f}, "
        f"Wilcoxon p = {'–' if p is None else f'{p:.3g}'}"
    )
    if comparison.get("relative_improvement_pct") is not None:
        text += f", relative improvement {comparison['relative_improvement_pct']:+.1f} %"
    text += ")"
    if comparison["resolved"]:
        return text + f": **resolved** at {level} %"
    needed = comparison["seeds_needed"]
    text += f": not resolved at {level} %"
    if wilcoxon_floor(n) >= 1.0 - comparison["level"]:
        floor = rank_test_seeds(comparison["level"])
        needed = max(needed or 0, floor)
        text += (
            f" (the signed-rank test cannot go below p = {wilcoxon_floor(n):.3g} with {n} seeds; "
            f"it needs at least {floor} seeds)"
        )
    return text + (f"; a difference this size would need about {needed} seeds" if needed else "")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
