"""The anytime curves of a comparison: every search run's progress.csv (best held-out score so far
after every unit, by the search's own measure), read at common image counts, averaged over seeds,
and drawn in anytime.png and comparison.md; a resumed search carries its rows on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from segnas.report import anytime


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _write(run_dir: Path, rows: list[tuple[int, float | None]]) -> Path:
    run_dir.mkdir(parents=True)
    with (run_dir / anytime.PROGRESS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(anytime.PROGRESS_COLUMNS)
        for unit, (images, score) in enumerate(rows):
            writer.writerow([unit, images, unit, "" if score is None else score])
    return run_dir


def test_step_curve_holds_the_best_so_far() -> None:
    xs = np.array([0, 10, 15, 20, 35, 50])
    got = anytime.step_at([(10, 0.2), (20, 0.1), (30, 0.4)], xs)
    np.testing.assert_array_equal(got[1:], [0.2, 0.2, 0.2, 0.4, 0.4])
    assert np.isnan(got[0])


def test_curves_average_the_seeds_at_common_image_counts(tmp_path) -> None:
    table = [
        {
            "label": "fmas",
            "seed": 0,
            "status": "ok",
            "run_dir": str(_write(tmp_path / "a", [(10, None), (20, 0.3), (40, 0.5)])),
        },
        {
            "label": "fmas",
            "seed": 1,
            "status": "ok",
            "run_dir": str(_write(tmp_path / "b", [(10, 0.2), (30, 0.4), (35, 0.1)])),
        },
        {"label": "fmas", "seed": 2, "status": "failed", "run_dir": str(tmp_path / "c")},
    ]
    found = anytime.curves(table)["fmas"]
    assert found["seeds"] == [0, 1]
    np.testing.assert_array_equal(found["images"], [10, 20, 30, 35])  # up to the fewest images a seed reached
    np.testing.assert_allclose(found["mean"], [0.2, 0.25, 0.35, 0.35])  # seed 0: none at 10, 0.3 until 40
    assert found["sd"][-1] == pytest.approx(np.std([0.3, 0.4], ddof=1))
    text = "\n".join(anytime.lines({"fmas": found}))
    assert "| fmas | front's best val-subset mIoU | 2 | 0.0 | 0.3500 ± 0.0707 |" in text
    assert anytime.plot(tmp_path / "anytime.png", {"fmas": found}).stat().st_size > 0


def test_a_comparison_draws_the_anytime_curves(tiny_comparison) -> None:
    run_dir, _ = tiny_comparison
    for row in read_csv(run_dir / "comparison.csv"):
        progress = read_csv(Path(row["run_dir"]) / anytime.PROGRESS_FILE)
        scores = [float(r["best_score"]) for r in progress if r["best_score"]]
        images = [int(r["images_seen"]) for r in progress]
        assert scores and np.all(np.diff(scores) >= 0) and np.all(np.diff(images) > 0)
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert images[-1] == summary["search_images_seen"]
    text = (run_dir / "comparison.md").read_text()
    assert "## Anytime" in text and "| random-autodeeplab | held-out trainB mIoU | 2 |" in text
    assert (run_dir / "anytime.png").stat().st_size > 0
