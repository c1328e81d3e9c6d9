"""Every paper-scale experiment preset composes and runs one tiny step of its task on a tiny
folder in its dataset's real layout: the preset's own keys are kept, only sizes are shrunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from segnas import pipeline
from tests.conftest import CONFIG_DIR, compose_config, write_cityscapes, write_voc

#: The paper-scale presets (search or train on a real dataset); a table preset (task=tabulate) is
#: tested with the tables (tests/test_tables.py).
PRESETS = sorted(
    p.stem
    for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")
    if yaml.safe_load(p.read_text()).get("task") != "tabulate"
)

#: One step of everything: shared by every preset.
ONE_STEP = [
    "trainer=cpu",
    "data.crop_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "logger=csv",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=1",
    "++trainer.limit_val_batches=1",
    "trainer.max_steps=-1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.enable_progress_bar=false",
    "train.log_images=0",
    "hardware.runs=1",
    "hardware.warmup=0",
    "retrain.epochs=1",
    # int8 of the winners is tested in test_quantize_summary.py; 6 training images here
    "quantize.in_summary=false",
]
#: Per searcher: the smallest search its preset's settings allow.
SEARCH = {
    "autodeeplab": [
        "searcher.layers=2",
        "searcher.filter_multiplier=2",
        "searcher.blocks=1",
        "searcher.aspp_channels=8",
        "searcher.epochs=2",
        "searcher.warmup_epochs=1",
        "searcher.batches_per_epoch=1",
        "searcher.val_images=2",
        "searcher.network.filter_multiplier=2",
        "searcher.network.aspp_channels=8",
        "searcher.network.decoder_channels=8",
        "searcher.network.low_level_channels=4",
    ],
    "auxcell": [
        "searcher.children=1",
        "searcher.top_k=1",
        "searcher.stage1.num_crops=4",
        "searcher.stage1.batch_size=2",
        "searcher.stage1.epochs=1",
        "searcher.stage2.max_batches=1",
        "searcher.reward.holdout_min=2",
        "searcher.calibrate_batches=1",
    ],
    "fmas": [
        "searcher.supernet_epochs=1",
        "searcher.pop_size=2",
        "searcher.generations=1",
        "searcher.val_images=2",
        "searcher.calib_images=2",
        "searcher.top_k=1",
        "searcher.retrain_epochs=1",
        "searcher.input_size=[32,32]",
    ],
}


def dataset_root(preset: str, tmp_path: Path) -> Path:
    data = yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{preset}.yaml").read_text())["defaults"]
    name = next(d["override /data"] for d in data if isinstance(d, dict) and "override /data" in d)
    if name == "cityscapes":
        return write_cityscapes(tmp_path / "cityscapes", per_split=6)
    assert name == "voc", f"no fixture for data={name}"
    names = [f"2007_{k:06d}" for k in range(10)]
    return write_voc(
        tmp_path / "voc", train=names[:6], val=names[6:], train_split="train_aug", mask_dir="SegmentationClassAug"
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_one_tiny_step(preset: str, tmp_path: Path) -> None:
    preset_cfg = compose_config(f"experiment={preset}", "run_dir=/tmp/unused", tiny=False)
    tiny = SEARCH[preset_cfg.searcher.name] if preset_cfg.task == "search" else []
    cfg = compose_config(
        f"experiment={preset}",
        f"run_dir={tmp_path / 'run'}",
        f"data.root={dataset_root(preset, tmp_path)}",
        *ONE_STEP,
        *tiny,
        tiny=False,
    )
    summary = pipeline.run(cfg)
    assert summary["task"] == preset_cfg.task
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["data"] == preset_cfg.data.name and written["params"] > 0
    assert written["steps"] >= 1 if preset_cfg.task == "train" else written["retrained"][0]["steps"] >= 1
    kept = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert kept["logger"]["_target_"].endswith("CSVLogger")
    if preset_cfg.task == "search":  # the preset's searcher settings that were not shrunk survive
        assert kept["searcher"]["name"] == preset_cfg.searcher.name
