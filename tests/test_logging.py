"""W&B offline files, validation overlays and closing the W&B run even on a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segnas import pipeline
from segnas.data.datamodule import default_palette
from segnas.report.images import colourise, overlay_panel


def test_wandb_offline_run_is_written_and_closed(make_cfg, tmp_path: Path) -> None:
    import wandb

    # limit_* batches, not fast_dev_run: fast_dev_run swaps the logger for a dummy
    cfg = make_cfg(
        "task=train",
        "arch=deeplabv3plus-mobilenetv2",
        "logger=wandb",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    )
    summary = pipeline.run(cfg)
    assert wandb.run is None, "the W&B run must be finished when the task returns"
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert summary["logs"] == str(runs[0])
    assert list(runs[0].glob("*.wandb")), "no .wandb event file"
    media = list(runs[0].rglob("media/images/**/*.png"))
    assert media, "validation overlays were not logged to W&B"


def test_wandb_run_is_closed_when_the_task_crashes(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    from segnas.training import module

    def explode(self, batch, batch_idx):
        raise RuntimeError("boom")

    monkeypatch.setattr(module.SegmentationModule, "training_step", explode)
    cfg = make_cfg("task=train", "arch=deeplabv3plus-mobilenetv2", "logger=wandb", "trainer.limit_train_batches=1")
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.run(cfg)
    assert wandb.run is None


def test_overlay_marks_ignored_pixels_and_keeps_image_left() -> None:
    palette = default_palette(3)
    image = np.full((4, 5, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1, 2, 255, 0]] * 4)
    panel = overlay_panel(image, mask, mask, palette)
    assert panel.shape == (4, 15, 3)
    np.testing.assert_array_equal(panel[:, :5], image)
    assert (colourise(mask, palette)[:, 3] == 255).all()
    assert len({tuple(c) for c in default_palette(21)}) == 21


def test_csv_logger_copied_into_another_process_keeps_the_file_consistent(tmp_path) -> None:
    """A spawned process gets a pickled copy of the parent's CSV logger (trainer=ddp_spawn): rows
    it writes after the parent (or another copy) added columns must land under the right header."""
    import csv
    import pickle

    from segnas.report.loggers import CSVLogger

    parent = CSVLogger(save_dir=str(tmp_path), name="csv")
    parent.log_metrics({"search/reward": 0.5}, step=0)
    parent.save()
    child = pickle.loads(pickle.dumps(parent))  # what a spawned process starts from
    parent.log_metrics({"search/reward": 0.6, "search/baseline": 0.55}, step=1)
    parent.save()
    child.log_metrics({"train/loss": 1.5}, step=0)
    child.save()
    child.log_metrics({"search/reward": 0.7}, step=2)
    child.save()
    with open(parent.experiment.metrics_file_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["search/reward"], r["search/baseline"], r["train/loss"]) for r in rows] == [
        ("0", "0.5", "", ""),
        ("1", "0.6", "0.55", ""),
        ("0", "", "", "1.5"),
        ("2", "0.7", "", ""),
    ]
