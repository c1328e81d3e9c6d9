"""task=train / eval end to end on tiny synthetic data: files, resume, loss, refusal to overwrite."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from segnas import pipeline
from segnas.errors import ConfigError
from segnas.training import load_network
from tests.conftest import TINY, write_voc_layout

ARCH = "arch=deeplabv3plus-mobilenetv2"


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(next(run_dir.glob("csv/version_*/metrics.csv"))) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("train") / "run"
    cfg = compose_config(f"run_dir={run_dir}", "task=train", ARCH, "trainer.max_epochs=2")
    return run_dir, pipeline.run(cfg)


def test_train_writes_the_run_directory(trained_run) -> None:
    run_dir, summary = trained_run
    for name in ("config.yaml", "genotype.yaml", "summary.json", "last.ckpt", "best.ckpt", "model.pt", "model.onnx"):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["task"] == "train" and on_disk["space"] == "deeplabv3plus"
    for key in (
        "val_mIoU",
        "val_fwIoU",
        "val_pixel_acc",
        "val_mean_class_acc",
        "params",
        "macs",
        "latency_ms",
        "latency_target",
        "wall_time_s",
    ):
        assert on_disk[key] is not None, key
    assert 0.0 <= on_disk["val_mIoU"] <= 1.0
    assert on_disk["steps"] == 2 * (16 // 4)
    # last.ckpt must be the final state, not the last epoch in which val mIoU improved
    assert torch.load(run_dir / "last.ckpt", weights_only=False)["global_step"] == on_disk["steps"]
    assert len(on_disk["val_per_class_iou"]) == 5 and "background" in on_disk["val_per_class_iou"]
    assert list((run_dir / "images").glob("val_epoch*.png")), "validation overlays were not drawn"


def test_saved_model_reproduces_the_checkpoint(trained_run) -> None:
    run_dir, _ = trained_run
    _, classes_a, from_ckpt = load_network(run_dir / "last.ckpt")
    _, classes_b, from_pt = load_network(run_dir / "model.pt")
    assert classes_a == classes_b == 5
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(from_ckpt.eval()(x), from_pt.eval()(x))


def test_eval_scores_the_checkpoint(trained_run, make_cfg, tmp_path: Path) -> None:
    run_dir, summary = trained_run
    result = pipeline.run(make_cfg("task=eval", f"checkpoint={run_dir}/last.ckpt"))
    # the same weights on the same split give the same confusion matrix
    assert result["val_mIoU"] == pytest.approx(summary["val_mIoU"], abs=1e-9)
    assert (tmp_path / "run" / "summary.json").is_file()


def test_eval_on_the_train_split(trained_run, make_cfg) -> None:
    run_dir, _ = trained_run
    result = pipeline.run(make_cfg("task=eval", f"checkpoint={run_dir}", "eval.split=train"))
    assert result["split"] == "train" and 0.0 <= result["train_mIoU"] <= 1.0
    assert "val_mIoU" not in result


def test_rerun_into_a_finished_run_dir_is_refused(trained_run, make_cfg) -> None:
    run_dir, _ = trained_run
    before = (run_dir / "last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        pipeline.run(make_cfg("task=train", ARCH, run_dir=run_dir))
    assert (run_dir / "last.ckpt").read_bytes() == before


def test_resume_continues_from_last_ckpt(trained_run, make_cfg, tmp_path: Path) -> None:
    old_dir, old = trained_run
    old_bytes = (old_dir / "last.ckpt").read_bytes()
    summary = pipeline.run(make_cfg("task=train", ARCH, "trainer.max_epochs=3", f"resume={old_dir}"))
    assert summary["resumed_from"] == str(old_dir / "last.ckpt")
    assert summary["steps"] == old["steps"] + 16 // 4  # one more epoch, not three
    assert (old_dir / "last.ckpt").read_bytes() == old_bytes, "the resumed run must not touch the old one"
    steps = [int(row["step"]) for row in read_metrics(tmp_path / "run") if row.get("train/loss")]
    assert min(steps) >= old["steps"] - 1


def test_resume_true_without_a_checkpoint_names_the_key(make_cfg) -> None:
    with pytest.raises(ConfigError, match="resume"):
        pipeline.run(make_cfg("task=train", ARCH, "resume=true"))


def test_a_few_steps_lower_the_loss(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "task=train",
        ARCH,
        "trainer.max_epochs=15",
        "trainer.overfit_batches=1",
        "data.scale_range=[1.0,1.0]",
        "train.scheduler=constant",
        "trainer.check_val_every_n_epoch=100",
        "train.log_images=0",
    )
    pipeline.run(cfg)
    losses = [float(row["train/loss"]) for row in read_metrics(tmp_path / "run") if row.get("train/loss")]
    assert len(losses) >= 10
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=fly"], "task=fly"),
        (["task=train"], "needs arch"),
        (["task=eval"], "needs checkpoint"),
        (["task=train", "arch=no-such-net"], "not a preset"),
        (["task=train", ARCH, "data.batch_size=0"], "data.batch_size"),
        (["task=profile", ARCH, "profile.input_size=[64]"], "profile.input_size"),
        (["task=search", "~searcher"], "needs searcher="),
        (["task=eval", "checkpoint=/nonexistent/x.ckpt"], "checkpoint=/nonexistent/x.ckpt"),
    ],
)
def test_bad_config_names_the_key(make_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(Exception, match=message.replace("[", r"\[")):
        pipeline.run(make_cfg(*overrides))


def test_train_on_a_voc_layout_folder(make_cfg, tmp_path: Path) -> None:
    root = write_voc_layout(tmp_path / "VOC2012", num_classes=3)
    tiny = [o for o in TINY if not o.startswith("data")]
    summary = pipeline.run(
        make_cfg(
            *tiny,
            "task=train",
            ARCH,
            "data=voc",
            f"data.root={root}",
            "data.num_classes=3",
            "data.crop_size=32",
            "data.batch_size=2",
            "data.num_workers=0",
            tiny=False,
        )
    )
    assert summary["data"] == "voc" and summary["num_classes"] == 3
    assert summary["steps"] == 8 // 2
    assert 0.0 <= summary["val_mIoU"] <= 1.0
