"""Logs a cluster user can read: one line per training epoch in the ``segnas`` log (Hydra's
``run.log``), and no progress bar when the output is not a terminal."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from segnas import pipeline
from segnas.training.trainer import build_trainer
from tests.conftest import TINY, subprocess_env

ARCH = "arch=deeplabv3plus-mobilenetv2"
#: epoch k/N: train loss, every validation score, the learning rate and the epoch's seconds.
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/2: train loss \d+\.\d{4}, val/fwIoU \d\.\d{4}, val/loss \d+\.\d{4}, "
    r"val/mIoU \d\.\d{4}, val/mean_class_acc \d\.\d{4}, val/pixel_acc \d\.\d{4}, "
    r"lr [0-9.e-]+, \d+\.\d s$"
)
QUICK = ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


def test_training_logs_one_line_per_epoch(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="segnas"):
        pipeline.run(make_cfg("task=train", ARCH, *QUICK))
    lines = [
        r.getMessage() for r in caplog.records if r.name.startswith("segnas") and r.getMessage().startswith("epoch")
    ]
    assert [int(EPOCH_LINE.match(line).group(1)) for line in lines] == [1, 2], lines


@pytest.mark.parametrize(
    ("setting", "terminal", "bar"),
    [("null", False, False), ("null", True, True), ("true", False, True), ("false", True, False)],
)
def test_the_progress_bar_shows_only_on_a_terminal_unless_set(
    make_cfg, tmp_path: Path, monkeypatch, setting: str, terminal: bool, bar: bool
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    cfg = make_cfg(f"trainer.enable_progress_bar={setting}")
    trainer = build_trainer(cfg, tmp_path, None, instantiate(cfg.data))
    assert (trainer.progress_bar_callback is not None) == bar


def test_the_shipped_trainer_shows_the_bar_only_on_a_terminal(make_cfg) -> None:
    assert make_cfg(tiny=False).trainer.enable_progress_bar is None


def test_a_run_without_a_terminal_logs_epochs_and_draws_no_bar(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("trainer.enable_progress_bar")]
    result = subprocess.run(
        [sys.executable, "-m", "segnas.run", "task=train", ARCH, *tiny, *QUICK, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stdout + result.stderr
    logged = [
        line.split(" - ", 1)[1]
        for line in (run_dir / "run.log").read_text().splitlines()
        if "][segnas." in line and " - epoch " in line
    ]
    assert [int(EPOCH_LINE.match(line).group(1)) for line in logged] == [1, 2], logged
