"""What a replay reports: for each algorithm, its anytime curve (hypervolume or best score against
evaluations) over many seeds, as a mean with a 95 % bootstrap band of the mean, and at the final
budget the differences between algorithms (independent samples: bootstrap interval and
Mann-Whitney p-value, :func:`segnas.report.statistics.unpaired`).

Files: ``replay.csv`` (every run's curve, one row per algorithm, seed and evaluation count),
``replay_summary.csv`` (mean and band per algorithm and evaluation count), ``replay.md`` and
``replay.png``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segnas.report.run_dir import write_atomic
from segnas.report.statistics import unpaired


def band(
    values: np.ndarray, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``values`` (runs x points): the percentile bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[draws].mean(axis=1)  # resamples x points
    tail = (1.0 - level) / 2.0 * 100.0
    return np.percentile(means, tail, axis=0), np.percentile(means, 100.0 - tail, axis=0)


def summarise(curves: Mapping[str, np.ndarray], xs: Sequence[int], level: float = 0.95) -> list[dict[str, Any]]:
    """Mean, band, median and spread of every algorithm's curves at every point of ``xs``."""
    rows = []
    for name, values in curves.items():
        low, high = band(values, level)
        for k, x in enumerate(xs):
            column = values[:, k]
            rows.append(
                {
                    "algorithm": name,
                    "evaluations": int(x),
                    "runs": len(column),
                    "mean": float(column.mean()),
                    "band_low": float(low[k]),
                    "band_high": float(high[k]),
                    "median": float(np.median(column)),
                    "sd": float(column.std(ddof=1)) if len(column) > 1 else 0.0,
                }
            )
    return rows


def differences(curves: Mapping[str, np.ndarray], baseline: str, level: float = 0.95) -> list[dict[str, Any]]:
    """Every other algorithm against ``baseline`` at the last point."""
    return [
        {"algorithm": name, "against": baseline, **unpaired(values[:, -1], curves[baseline][:, -1], level)}
        for name, values in curves.items()
        if name != baseline
    ]


def write(
    run_dir: Path,
    curves: Mapping[str, np.ndarray],
    xs: Sequence[int],
    seeds: Sequence[int],
    metric: str,
    baseline: str,
    header: Sequence[str],
    level: float = 0.95,
    optimum: float | None = None,
) -> dict[str, Any]:
    """replay.csv, replay_summary.csv, replay.md and replay.png; returns the summary's entries."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["algorithm", "seed", "evaluations", metric])
    for name, values in curves.items():
        for seed, run in zip(seeds, values):
            writer.writerows([name, seed, x, f"{v:.6g}"] for x, v in zip(xs, run))
    write_atomic(run_dir / "replay.csv", buffer.getvalue())
    rows = summarise(curves, xs, level)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / "replay_summary.csv", buffer.getvalue())
    diffs = differences(curves, baseline, level)
    final = [r for r in rows if r["evaluations"] == int(xs[-1])]
    pct = round(100 * level)
    lines = [
        *header,
        "",
        f"| algorithm | runs | {metric} at {xs[-1]} evaluations: mean | {pct} % band of the mean "
        "| median | sd |" + (" mean / optimum |" if optimum else ""),
        "|---|---|---|---|---|---|" + ("---|" if optimum else ""),
    ]
    for r in final:
        lines.append(
            f"| {r['algorithm']} | {r['runs']} | {r['mean']:.4f} | {r['band_low']:.4f} … {r['band_high']:.4f} "
            f"| {r['median']:.4f} | {r['sd']:.4f} |" + (f" {r['mean'] / optimum:.3f} |" if optimum else "")
        )
    lines.append("")
    for d in diffs:
        verdict = "**resolved**" if d["resolved"] else "not resolved"
        lines.append(
            f"- {d['algorithm']} − {d['against']}: {d['mean']:+.4f} ({pct} % bootstrap CI "
            f"{d['ci_low']:+.4f} … {d['ci_high']:+.4f}, Mann-Whitney p = {d['mannwhitney_p']:.3g}): "
            f"{verdict} at {pct} %"
        )
    write_atomic(run_dir / "replay.md", "\n".join(lines) + "\n")
    _plot(run_dir / "replay.png", rows, metric, optimum)
    return {
        "replay_csv": str(run_dir / "replay.csv"),
        "replay_md": str(run_dir / "replay.md"),
        "replay_plot": str(run_dir / "replay.png"),
        "final": final,
        "differences": diffs,
    }


def _plot(path: Path, rows: Sequence[dict[str, Any]], metric: str, optimum: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["algorithm"] for r in rows):
        mine = [r for r in rows if r["algorithm"] == name]
        xs = [r["evaluations"] for r in mine]
        ax.plot(xs, [r["mean"] for r in mine], label=f"{name} ({mine[0]['runs']} runs)")
        ax.fill_between(xs, [r["band_low"] for r in mine], [r["band_high"] for r in mine], alpha=0.25)
    if optimum is not None:
        ax.axhline(optimum, color="k", linestyle=":", label="optimum (whole table)")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
