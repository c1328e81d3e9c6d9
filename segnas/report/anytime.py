"""The anytime plot of a comparison: the best held-out score each search had measured against the
images it had used, mean and band over seeds, one panel per searcher with its random baseline.

Each search run writes ``progress.csv`` (:data:`PROGRESS_COLUMNS`) after every unit. A search's
score is its own measure: FMAS and its random baseline the front's best val-subset mIoU, auxcell
and its baseline the best child reward, the Auto-DeepLab supernet its val-subset mIoU and random
Auto-DeepLab the best held-out (trainB) mIoU; within FMAS and auxcell the two curves share the
measure, for Auto-DeepLab they do not (the legend says so). Seeds see
different image counts, so each seed's best-so-far step curve is read at every image count any
seed of the label recorded, up to the fewest images any seed reached: the band is the mean ± one
standard deviation over seeds.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: ``progress.csv`` (written by :class:`segnas.searchers.engine.RecordFiles`): after every unit, the
#: images and seconds spent and the best held-out score so far by the search's own measure.
PROGRESS_FILE = "progress.csv"
PROGRESS_COLUMNS = ("unit", "images_seen", "wall_time_s", "best_score")

#: What each label's best score measures (the panel's legend says it).
MEASURES = {
    "autodeeplab": "supernet val-subset mIoU",
    "random-autodeeplab": "held-out trainB mIoU",
    "auxcell": "best child reward",
    "random-auxcell": "best child reward",
    "fmas": "front's best val-subset mIoU",
    "random-fmas": "front's best val-subset mIoU",
}


def read_progress(run_dir: Path) -> list[tuple[int, float]]:
    """(images seen, best score) after every unit of a search run that scored something."""
    path = Path(run_dir) / PROGRESS_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            (int(row["images_seen"]), float(row["best_score"]))
            for row in csv.DictReader(handle)
            if row.get("best_score") not in (None, "")
        ]


def step_at(points: Sequence[tuple[int, float]], xs: np.ndarray) -> np.ndarray:
    """A best-so-far step curve read at ``xs`` (NaN before its first point)."""
    images = np.array([p[0] for p in points])
    scores = np.maximum.accumulate(np.array([p[1] for p in points]))
    index = np.searchsorted(images, xs, side="right") - 1
    return np.where(index >= 0, scores[np.clip(index, 0, None)], np.nan)


def curves(table: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per search label: the common image counts, the seeds' curves there, mean and sd."""
    out: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(r["label"] for r in table):
        runs = {
            r["seed"]: read_progress(Path(r["run_dir"])) for r in table if r["label"] == label and r["status"] == "ok"
        }
        runs = {seed: points for seed, points in runs.items() if points}
        if not runs:
            continue
        end = min(points[-1][0] for points in runs.values())
        xs = np.array(sorted({x for points in runs.values() for x, _ in points if x <= end}))
        values = np.vstack([step_at(points, xs) for points in runs.values()])
        with warnings.catch_warnings():  # a count where one seed alone has a score: no spread (NaN)
            warnings.simplefilter("ignore", RuntimeWarning)
            sd = np.nanstd(values, axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(xs))
        out[label] = {
            "images": xs,
            "seeds": list(runs),
            "values": values,
            "mean": np.nanmean(values, axis=0),
            "sd": np.nan_to_num(sd),
        }
    return out


def family(label: str) -> str:
    return label.removeprefix("random-")


def lines(found: dict[str, dict[str, Any]]) -> list[str]:
    """comparison.md's anytime section: each label's mean best score at its last common image count."""
    if not found:
        return []
    out = [
        "",
        "## Anytime: best held-out score against images seen (anytime.png)",
        "",
        "| search | measure | seeds | images (k) | best score: mean ± sd |",
        "|---|---|---|---|---|",
    ]
    for label, curve in found.items():
        out.append(
            f"| {label} | {MEASURES.get(label, 'search score')} | {len(curve['seeds'])} | "
            f"{curve['images'][-1] / 1000:.1f} | {curve['mean'][-1]:.4f} ± {curve['sd'][-1]:.4f} |"
        )
    return out


def plot(path: Path, found: dict[str, dict[str, Any]]) -> Path | None:
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(family(label) for label in found))
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 3.8), squeeze=False)
    for ax, name in zip(axes[0], families):
        for label, curve in found.items():
            if family(label) != name:
                continue
            x = curve["images"] / 1000
            dashed = label.startswith("random-")
            ax.step(
                x,
                curve["mean"],
                where="post",
                linestyle="--" if dashed else "-",
                label=f"{label} ({MEASURES.get(label, 'score')}, {len(curve['seeds'])} seeds)",
            )
            ax.fill_between(x, curve["mean"] - curve["sd"], curve["mean"] + curve["sd"], step="post", alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("images seen (k)")
        ax.set_ylabel("best held-out score (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
