"""Paired statistics of task=compare (issue 16, section 3) against scipy and hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from segnas.report import statistics
from segnas.report.comparison import markdown


def test_the_bootstrap_interval_agrees_with_scipys_percentile_bootstrap() -> None:
    differences = np.array([0.012, -0.004, 0.020, 0.007, 0.015, -0.001, 0.009])
    ours = statistics.bootstrap_ci(differences, 0.95, resamples=40_000, seed=1)
    theirs = stats.bootstrap(
        (differences,), np.mean, confidence_level=0.95, n_resamples=40_000, method="percentile", random_state=2
    ).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=6e-4)
    assert ours[0] < differences.mean() < ours[1]


def test_the_wilcoxon_p_value_is_the_exact_signed_rank_test() -> None:
    # five positive differences: the most extreme of 2^5 sign patterns on each side, p = 2/32
    assert statistics.wilcoxon_p(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(2 / 32)
    mixed = np.array([0.03, -0.01, 0.02, 0.05, -0.02, 0.04])
    assert statistics.wilcoxon_p(mixed) == pytest.approx(stats.wilcoxon(mixed).pvalue)
    assert statistics.wilcoxon_p(np.zeros(4)) == 1.0 and statistics.wilcoxon_p(np.array([0.0, 0.1])) is None


def test_seeds_needed_follows_the_normal_approximation() -> None:
    # (1.959964 + 0.841621)^2 * (sd / mean)^2 = 7.849 * 4 -> 32 seeds for a mean half the spread
    assert statistics.seeds_needed(0.01, 0.02) == math.ceil(7.8489 * 4)
    assert statistics.seeds_needed(0.0, 0.02) is None and statistics.seeds_needed(0.5, 0.001) == 2


def test_paired_pairs_by_seed_and_says_whether_it_is_resolved() -> None:
    searched = {0: 0.40, 1: 0.42, 2: 0.41, 3: 0.43, 4: None, 6: 0.44, 7: 0.40}
    random = {0: 0.30, 1: 0.33, 2: 0.31, 3: 0.32, 5: 0.9, 6: 0.35, 7: 0.29}
    result = statistics.paired(searched, random)
    assert result["n"] == 6 and result["seeds"] == [0, 1, 2, 3, 6, 7]  # seeds 4 and 5 have no pair
    assert result["mean"] == pytest.approx(0.1) and result["resolved"] is True
    assert result["wilcoxon_p"] == pytest.approx(stats.wilcoxon([0.1, 0.09, 0.1, 0.11, 0.09, 0.11]).pvalue)
    assert result["relative_improvement_pct"] == pytest.approx(
        100
        * (sum([0.40, 0.42, 0.41, 0.43, 0.44, 0.40]) - sum([0.30, 0.33, 0.31, 0.32, 0.35, 0.29]))
        / sum([0.30, 0.33, 0.31, 0.32, 0.35, 0.29])
    )
    text = statistics.describe("a − b", result)
    assert "**resolved** at 95 %" in text and "+0.1000 over 6 paired seeds" in text
    noisy = statistics.paired({0: 0.40, 1: 0.38, 2: 0.45}, {0: 0.41, 1: 0.36, 2: 0.44})
    assert noisy["resolved"] is False and "not resolved at 95 %" in statistics.describe("a − b", noisy)
    assert "would need about" in statistics.describe("a − b", noisy)


def test_too_few_seeds_for_the_rank_test_resolve_nothing() -> None:
    """With 5 seeds the two-sided signed-rank test cannot go below p = 2 / 2^5 = 0.0625, so even a
    difference whose bootstrap interval excludes 0 (5 points resample to an interval far too narrow)
    is not called resolved at 95 %; the sentence says how many seeds the test needs."""
    assert statistics.wilcoxon_floor(5) == pytest.approx(stats.wilcoxon([1, 2, 3, 4, 5]).pvalue) == 0.0625
    assert statistics.wilcoxon_floor(6) == pytest.approx(stats.wilcoxon([1, 2, 3, 4, 5, 6]).pvalue)
    assert statistics.wilcoxon_floor(6) < 0.05 and statistics.rank_test_seeds(0.95) == 6
    result = statistics.paired({k: 0.4 + 0.01 * k for k in range(5)}, {k: 0.3 for k in range(5)})
    assert result["ci_low"] > 0 and result["wilcoxon_p"] == pytest.approx(0.0625) and result["resolved"] is False
    text = statistics.describe("a − b", result)
    assert "not resolved at 95 %" in text and "cannot go below p = 0.0625 with 5 seeds" in text
    assert "at least 6 seeds" in text


def test_comparison_markdown_has_the_paired_lines() -> None:
    rows = [
        {
            "label": label,
            "seed": seed,
            "status": "ok",
            "val_mIoU": value,
            "params": 1,
            "macs": 1,
            "latency_ms": None,
            "search_wall_time_s": 1.0,
            "search_images_seen": 1,
            "run_dir": f"/x/{label}{seed}",
            "latency_estimated": False,
        }
        for label, values in (("fmas", [0.5, 0.52, 0.49]), ("random-fmas", [0.45, 0.47, 0.46]))
        for seed, value in enumerate(values)
    ]
    text = markdown(rows, "python -m segnas.run task=compare")
    line = next(row for row in text.splitlines() if row.startswith("- fmas − random-fmas"))
    expected = statistics.paired({0: 0.5, 1: 0.52, 2: 0.49}, {0: 0.45, 1: 0.47, 2: 0.46})
    assert f"{expected['mean']:+.4f} over 3 paired seeds" in line and "Wilcoxon p = " in line


def test_hypervolume_lines_only_pair_runs_that_have_fronts() -> None:
    rows = [
        {
            "label": label,
            "seed": seed,
            "status": "ok",
            "val_mIoU": 0.4 + 0.01 * seed,
            "params": 1,
            "macs": 1,
            "latency_ms": None,
            "search_wall_time_s": 1.0,
            "search_images_seen": 1,
            "run_dir": f"/x/{label}{seed}",
            "latency_estimated": False,
            "finetuned_hypervolume": 0.2 + 0.01 * seed if "fmas" in label else None,
        }
        for label in ("fmas", "random-fmas", "autodeeplab")
        for seed in range(3)
    ]
    text = markdown(rows, "python -m segnas.run task=compare")
    section = text.split("Hypervolume of the fine-tuned FMAS front")[1]
    listed = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(listed) == 1 and listed[0].startswith("- fmas − random-fmas")
