"""DDP on 2 CPU processes (ddp_spawn): training runs and the confusion matrix is summed over ranks."""

from __future__ import annotations

import json
from pathlib import Path

from segnas import pipeline


def test_ddp_spawn_trains_on_two_cpu_processes(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "task=train",
        "arch=deeplabv3plus-mobilenetv2",
        "trainer=ddp_spawn",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=1",
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.log").write_text("")  # as Hydra creates it in the launching process
    summary = pipeline.run(cfg)
    # the spawned rank 0, which Hydra's logging never configured, still writes its epoch line there
    assert [line for line in (tmp_path / "run" / "run.log").read_text().splitlines() if "epoch 1/1:" in line]
    # 16 training images, batch 4 per rank, 2 ranks: 2 optimiser steps, 16 images seen
    assert summary["steps"] == 2
    assert summary["images_seen"] == 16
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.0 <= on_disk["val_mIoU"] <= 1.0
