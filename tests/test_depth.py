"""task_type=depth: metrics, loss and reward against hand computations, the depth transforms, the
task checks, and the auxcell search end to end on the synthetic depth maps."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import HydraException

from segnas import pipeline, spaces, targets
from segnas.data.transforms import eval_transform, train_transform
from segnas.errors import ConfigError
from segnas.metrics import DepthMetrics, geometric_reward
from segnas.searchers.auxcell.child import child_loss
from segnas.spaces.auxcell import build_decoder
from segnas.training import load_network
from segnas.training.checkpoint import save_network
from segnas.training.depth import berhu_loss, init_depth_output, mean_depth

SMALL = [
    "searcher=auxcell",
    "searcher.children=2",
    "searcher.stage1.num_crops=8",
    "searcher.stage1.batch_size=4",
    "searcher.stage1.epochs=2",
    "searcher.stage2.max_batches=1",
    "searcher.reward.holdout_min=4",
    "searcher.controller.ppo.minibatch_size=2",
    "task_type=depth",
]


def test_depth_metrics_equal_a_hand_computation() -> None:
    # valid pixels (pred, true): (1.1, 1), (3, 2), (4, 4); the 0 target is unknown, the last pixel masked out
    target = torch.tensor([[[[1.0, 2.0, 4.0, 0.0, 5.0]]]])
    pred = torch.tensor([[[[1.1, 3.0, 4.0, 9.0, 1.0]]]])
    valid = torch.tensor([[[[True, True, True, True, False]]]])
    metric = DepthMetrics()
    metric.update(pred[..., :2], target[..., :2], valid[..., :2])  # two updates = one pass over the split
    metric.update(pred[..., 2:], target[..., 2:], valid[..., 2:])
    scores = metric.compute()
    assert scores["RMSE"] == pytest.approx(math.sqrt((0.1**2 + 1.0**2 + 0.0) / 3))
    assert scores["REL"] == pytest.approx((0.1 / 1 + 1.0 / 2 + 0.0) / 3)
    assert scores["delta1"] == pytest.approx(2 / 3)  # ratios 1.1, 1.5, 1.0


def test_depth_metrics_clamp_negative_predictions_and_default_to_positive_targets() -> None:
    metric = DepthMetrics()
    metric.update(torch.tensor([-2.0, 2.0]), torch.tensor([2.0, 0.0]))  # the 0 target does not count
    scores = metric.compute()
    assert scores["RMSE"] == pytest.approx(2.0 - 1e-3)
    assert scores["delta1"] == 0.0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert all(math.isnan(v) for v in DepthMetrics().compute().values())


def test_berhu_equals_a_hand_computation() -> None:
    target = torch.tensor([1.0, 4.0, 2.0, 3.0])
    pred = torch.tensor([1.5, 2.0, 7.0, 100.0], requires_grad=True)
    valid = torch.tensor([True, True, True, False])
    # residuals 0.5, 2, 5 -> c = 0.2 * 5 = 1: 0.5 (L1), (4 + 1) / 2, (25 + 1) / 2
    loss = berhu_loss(pred, target, valid)
    assert loss.item() == pytest.approx((0.5 + 2.5 + 13.0) / 3)
    loss.backward()
    assert float(pred.grad[3]) == 0.0
    none_valid = berhu_loss(pred, target, torch.zeros(4, dtype=torch.bool))
    assert float(none_valid) == 0.0 and none_valid.requires_grad


def test_reward_turns_errors_into_scores() -> None:
    scores = {"delta1": 0.64, "RMSE": 3.0, "REL": 0.25}
    assert geometric_reward(scores, ["delta1", "RMSE"]) == pytest.approx(math.sqrt(0.64 / 4.0))
    assert geometric_reward(scores, ["REL"]) == pytest.approx(0.8)
    assert geometric_reward({"delta1": 1.0, "RMSE": 0.0}, ["delta1", "RMSE"]) == 1.0


def test_child_loss_for_depth_is_berhu_on_every_head_plus_distillation() -> None:
    torch.manual_seed(0)
    depth = torch.rand(2, 1, 4, 4) * 5 + 1
    main, aux = torch.rand(2, 1, 4, 4) * 5, [torch.rand(2, 1, 2, 2) * 5]
    teacher = torch.rand(2, 1, 4, 4) * 5
    loss = child_loss(main, aux, depth, teacher, aux_weight=0.15, kd_weight=0.3, criterion=berhu_loss)
    upsampled = torch.nn.functional.interpolate(aux[0], size=(4, 4), mode="bilinear", align_corners=False)
    expected = berhu_loss(main, depth) + 0.15 * berhu_loss(upsampled, depth) + 0.3 * ((main - teacher) ** 2).mean()
    assert float(loss) == pytest.approx(float(expected))


def test_depth_output_starts_at_the_mean_depth() -> None:
    arch = spaces.resolve_arch("auxcell-arch0").arch
    decoder = build_decoder({**arch, "width": 8, "sep_repeats": 1}, [24, 32, 96, 320], 1, aux_heads=True)
    assert init_depth_output(decoder, 7.5) == 4  # the main head and one auxiliary head per block
    assert float(decoder.classifier.bias) == 7.5 and all(float(h[1].bias) == 7.5 for h in decoder.aux_heads)
    batches = [
        {"depth": torch.tensor([0.0, 2.0, 4.0])},
        {"depth": torch.tensor([6.0])},
        {"depth": torch.tensor([100.0])},
    ]
    assert mean_depth(batches, 2) == pytest.approx(4.0)


def raw_scene(depth: np.ndarray) -> dict:
    return {
        "image": np.full((*depth.shape, 3), 120, np.uint8),
        "mask": np.zeros(depth.shape, np.uint8),
        "depth": depth,
        "name": "x",
    }


def test_random_zoom_divides_depth_and_zero_depth_is_invalid() -> None:
    depth = np.full((16, 16), 10.0, np.float32)
    depth[0, :] = 0.0  # no measurement
    zoomed = train_transform(16, (2.0, 2.0), (0.5,) * 3, (0.5,) * 3, 255, seed=0)(raw_scene(depth))
    assert torch.allclose(zoomed["depth"][zoomed["depth_valid"]], torch.tensor(5.0))
    plain = eval_transform((0.5,) * 3, (0.5,) * 3)(raw_scene(depth))
    assert plain["depth"].shape == (1, 16, 16)
    assert not plain["depth_valid"][0, 0].any() and plain["depth_valid"][0, 1:].all()
    assert torch.all(plain["depth"][plain["depth_valid"]] == 10.0)
    assert torch.all(plain["depth"][~plain["depth_valid"]] == 0.0)


def test_an_unknown_task_type_is_refused_when_the_config_is_composed(make_cfg) -> None:
    with pytest.raises(HydraException, match="task_type=heights"):
        make_cfg("task=search", "task_type=heights", tiny=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task_type=depth", "data=voc"], "needs data with depth"),
        (["task_type=depth", "searcher=autodeeplab"], "does not support task_type=depth"),
    ],
)
def test_task_type_mistakes_name_the_key(make_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        pipeline.check_config(make_cfg("task=search", *overrides, tiny=False))


def test_best_candidate_is_the_lowest_rmse_for_depth(make_cfg) -> None:
    entries = [{"val_RMSE": 2.0, "val_mIoU": 0.9}, {"val_RMSE": 1.0, "val_mIoU": 0.1}]
    assert targets.best(make_cfg("task_type=depth"), entries)["val_RMSE"] == 1.0
    assert targets.best(make_cfg(), entries)["val_mIoU"] == 0.9


def test_a_segmentation_teacher_is_refused_for_depth(make_cfg, tmp_path: Path) -> None:
    from tests.conftest import run_search

    genotype = spaces.resolve_arch("deeplabv3plus-mobilenetv2")
    teacher = save_network(tmp_path / "teacher.pt", genotype, 5, spaces.build(genotype, 5))
    with pytest.raises(ConfigError, match="searcher.teacher"):
        run_search(make_cfg(*SMALL, f"searcher.teacher={teacher}", run_dir=tmp_path))


def test_depth_search_then_retrain_end_to_end(make_cfg, tmp_path: Path) -> None:
    genotype = spaces.resolve_arch("deeplabv3plus-mobilenetv2")
    teacher = save_network(tmp_path / "teacher.pt", genotype, 1, spaces.build(genotype, 1))
    run_dir = tmp_path / "run"
    pipeline.run(make_cfg(*SMALL, "task=search", "retrain.epochs=1", f"searcher.teacher={teacher}", run_dir=run_dir))
    with open(run_dir / "search.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["status"] for r in table] == ["ok", "ok"]
    for row in table:  # the reward is sqrt(δ1 / (1 + RMSE)) of the child's held-out scores
        assert float(row["reward"]) == pytest.approx(math.sqrt(float(row["delta1"]) / (1 + float(row["RMSE"]))))
        assert row["mIoU"] == ""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task_type"] == "depth" and summary["search_distillation"] and summary["num_classes"] == 1
    assert summary["val_RMSE"] > 0 and 0 <= summary["val_delta1"] <= 1 and summary["val_REL"] >= 0
    assert "val_mIoU" not in summary and "val_per_class_iou" not in summary
    genotype, channels, net = load_network(run_dir / "model.pt")
    assert channels == 1 and net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert any((Path(summary["retrained"][0]["retrain_dir"]) / "images").glob("val_epoch*.png"))
    assert (Path(summary["retrained"][0]["retrain_dir"]) / "best.ckpt").is_file()
