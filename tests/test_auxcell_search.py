"""searcher=auxcell: early stopping, Polyak averaging, reward, child failures, resume, and the
pipeline end to end at tiny scale."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from segnas import pipeline, spaces
from segnas.metrics import geometric_reward, scores_from_confusion
from segnas.searchers.auxcell.early_stopping import ProgressiveStopper
from segnas.searchers.auxcell.polyak import PolyakAverage
from segnas.searchers.auxcell.trial import run_round
from segnas.training.checkpoint import save_network
from tests.conftest import run_search

#: A search small enough to take seconds: 16 train images (4 held out), crops of 32.
SMALL = [
    "searcher=auxcell",
    "searcher.children=3",
    "searcher.stage1.num_crops=8",
    "searcher.stage1.batch_size=4",
    "searcher.stage1.epochs=2",
    "searcher.stage2.max_batches=1",
    "searcher.reward.holdout_min=4",
    "searcher.controller.ppo.minibatch_size=2",
    "searcher.reward.omit_classes=[]",  # children this small earn 0 without background: nothing to learn from
]


class FixedUniform:
    """Stands in for the stopper's generator: every draw of U[0, tolerance) returns ``fraction × tolerance``."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, low: float, high: float) -> float:
        return low + self.fraction * (high - low)


def test_early_stopping_follows_the_rule_on_a_scripted_sequence() -> None:
    stopper = ProgressiveStopper(initial=0.01, tolerance=0.8, decay=0.5, schedule={2: 0.5})
    stopper.rng = FixedUniform(0.5)
    # 1: average 0.5*0.01 + 0.5*0.5 = 0.255; 0.5 > 0.255 passes
    assert stopper.step(0.5) is True and stopper.average == pytest.approx(0.255)
    # 2: average 0.1775; 0.1 < 0.1775, threshold 0.1775 * (1 - 0.4) = 0.1065 > 0.1: stops
    assert stopper.step(0.1) is False and stopper.average == pytest.approx(0.1775)
    # 3: tolerance shrinks to 0.4 before this check; average 0.13875; threshold 0.13875 * 0.8 = 0.111
    assert stopper.step(0.1) is False and stopper.tolerance == pytest.approx(0.4)
    # 4: average 0.126875; 0.115 > 0.126875 * 0.8 = 0.1015 passes though below the average
    assert stopper.step(0.115) is True
    assert stopper.average == pytest.approx(0.126875) and stopper.checks == 4


def test_early_stopping_state_round_trips() -> None:
    a = ProgressiveStopper(seed=3)
    for reward in (0.2, 0.05, 0.3):
        a.step(reward)
    b = ProgressiveStopper(seed=99)
    b.load_state_dict(a.state_dict())
    assert [a.step(r) for r in (0.01, 0.02, 0.2) * 5] == [b.step(r) for r in (0.01, 0.02, 0.2) * 5]


def test_polyak_average_equals_a_hand_computation() -> None:
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average = PolyakAverage(layer, decay=0.9)
    for value in (2.0, 3.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
    average.apply()
    # 0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 3 = 1.29
    assert layer.weight.item() == pytest.approx(1.29)


def test_reward_is_the_geometric_mean_of_hand_computed_scores() -> None:
    confusion = torch.tensor([[5, 1], [2, 2]])
    miou = (5 / 8 + 2 / 5) / 2  # IoU: 5 / (6 + 7 - 5), 2 / (4 + 3 - 2)
    fwiou = 0.6 * 5 / 8 + 0.4 * 2 / 5  # ground-truth frequencies 6/10 and 4/10
    class_acc = (5 / 6 + 2 / 4) / 2
    scores = scores_from_confusion(confusion)
    assert geometric_reward(scores) == pytest.approx((miou * fwiou * class_acc) ** (1 / 3))
    assert geometric_reward(scores, ["mIoU", "fwIoU", "pixel_acc"]) == pytest.approx((miou * fwiou * 0.7) ** (1 / 3))


def test_a_child_that_raises_gets_reward_zero_and_a_logged_error(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    from segnas.searchers.auxcell import trial

    def fails(context, index, arch):
        if index == 7:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise FloatingPointError("non-finite training loss (nan)")

    monkeypatch.setattr(trial, "train_stage_one", fails)
    with caplog.at_level(logging.ERROR):
        first = run_round(None, [(7, {})])[0]
        second = run_round(None, [(8, {})])[0]
    assert first["status"] == second["status"] == "failed"
    assert first["reward"] == second["reward"] == 0.0
    assert "OutOfMemoryError" in first["error"] and "nan" in second["error"]
    assert "child 7 failed" in caplog.text and "child 8 failed" in caplog.text


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_resume_continues_with_the_same_next_child(make_cfg, tmp_path: Path) -> None:
    fast = [*SMALL, "searcher.stage2.enabled=false"]
    straight_dir, first_dir, resumed_dir = (tmp_path / name for name in ("straight", "first", "resumed"))
    for path in (straight_dir, first_dir, resumed_dir):
        path.mkdir()
    run_search(make_cfg(*fast, run_dir=straight_dir))
    run_search(make_cfg(*fast, "searcher.children=2", run_dir=first_dir))
    run_search(make_cfg(*fast, run_dir=resumed_dir), first_dir / "last.ckpt")
    straight, resumed = rows(straight_dir / "search.csv"), rows(resumed_dir / "search.csv")
    assert len(rows(first_dir / "search.csv")) == 2 and len(resumed) == 3
    for a, b in zip(straight, resumed):
        assert (a["encoding"], a["reward"], a["baseline"]) == (b["encoding"], b["reward"], b["baseline"])


def test_search_then_retrain_end_to_end(make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    teacher = save_network(
        tmp_path / "teacher.pt",
        spaces.resolve_arch("deeplabv3plus-mobilenetv2"),
        5,
        spaces.build(spaces.resolve_arch("deeplabv3plus-mobilenetv2"), 5),
    )
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="segnas"):
        pipeline.run(
            make_cfg(
                *SMALL,
                "task=search",
                "retrain.epochs=1",
                f"searcher.teacher={teacher}",
                "searcher.top_k=2",
                run_dir=run_dir,
            )
        )
    table = rows(run_dir / "search.csv")
    assert [int(r["child"]) for r in table] == [0, 1, 2]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("child ")]
    assert [line.split(" ")[1] for line in logged] == ["0", "1", "2"]
    for line, row in zip(logged, table):  # one line per child: status, rewards, seconds, cell
        assert re.fullmatch(
            rf"child {row['child']} \({int(row['child']) + 1}/3\): (ok|stopped early after stage 1), "
            rf"reward {float(row['reward']):.4f} \(stage 1 \d\.\d{{4}}(, stage 2 \d\.\d{{4}})?\), "
            rf"\d+\.\d s, cell .+",
            line,
        ), line
    assert all(r["status"] == "ok" and 0.0 <= float(r["reward"]) <= 1.0 for r in table)
    assert all(float(r["controller_update_s"]) < 1.0 for r in table)
    genotype = spaces.resolve_arch(str(run_dir / "genotype.yaml"))
    assert genotype.space == "auxcell" and genotype.arch["width"] == 64 and genotype.arch["sep_repeats"] == 2
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["searcher"] == "auxcell" and on_disk["search_children"] == 3 and on_disk["search_distillation"]
    for key in (
        "search_wall_time_s",
        "search_best_reward",
        "search_controller_update_s_mean",
        "val_mIoU",
        "params",
        "macs",
    ):
        assert on_disk[key] is not None, key
    assert 1 <= len(on_disk["retrained"]) <= 2 and "search_reward" in on_disk["retrained"][0]
    assert all((run_dir / name).is_file() for name in ("model.onnx", "reward_curve.png", "best_cell.png", "last.ckpt"))
    hashes = {r["genotype_hash"] for r in table}
    assert on_disk["genotype_hash"] in hashes


def test_child_loss_is_ce_plus_weighted_aux_ce_plus_weighted_distillation() -> None:
    from segnas.searchers.auxcell.child import child_loss

    labels = torch.tensor([[[0, 1], [1, 255]]])  # the 255 pixel counts nowhere
    logits = torch.zeros(1, 2, 2, 2)  # uniform over 2 classes: CE = ln 2
    aux = [torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 2, 2)]  # resized to the labels, also ln 2
    teacher = torch.ones(1, 2, 2, 2)  # MSE to zeros = 1
    loss = child_loss(logits, aux, labels, teacher, aux_weight=0.15, kd_weight=0.3)
    assert float(loss) == pytest.approx(math.log(2) * (1 + 2 * 0.15) + 0.3)
    with pytest.raises(FloatingPointError, match="non-finite"):
        child_loss(torch.full((1, 2, 2, 2), float("nan")), [], labels, None, 0.15, 0.3)


def test_batchnorm_calibration_averages_the_batches() -> None:
    from segnas.searchers.auxcell.features import calibrate_batchnorm

    encoder = nn.Sequential(nn.BatchNorm2d(1))
    loader = [
        {"image": torch.full((2, 1, 2, 2), 1.0)},
        {"image": torch.full((2, 1, 2, 2), 3.0)},
        {"image": torch.full((2, 1, 2, 2), 100.0)},
    ]
    assert calibrate_batchnorm(encoder, loader, batches=2) == 2
    assert float(encoder[0].running_mean) == pytest.approx(2.0) and not encoder.training
    assert encoder[0].momentum == 0.1


def test_reinforce_runs_inside_the_search(make_cfg, tmp_path: Path) -> None:
    # the authors' REINFORCE option crashed (it unpacked four values from a three-value sample)
    result = run_search(
        make_cfg(
            *SMALL,
            "searcher.children=2",
            "searcher.stage2.enabled=false",
            "searcher.controller.algorithm=reinforce",
            run_dir=tmp_path,
        )
    )
    assert result.summary["search_controller_algorithm"] == "reinforce" and result.summary["search_children"] == 2
    assert len(rows(tmp_path / "search.csv")) == 2


def test_a_holdout_that_leaves_too_little_to_train_on_names_the_key(make_cfg, tmp_path: Path) -> None:
    """Checked with the data (the other keys are checked with the config, tests/test_settings.py)."""
    from segnas.errors import ConfigError

    with pytest.raises(ConfigError, match=r"searcher\.reward\.holdout=0\.99"):
        run_search(make_cfg(*SMALL, "searcher.reward.holdout=0.99", run_dir=tmp_path))


def test_a_failing_child_is_recorded_as_failed_and_the_search_goes_on(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from segnas.searchers.auxcell import trial

    real = trial.train_stage_one

    def second_runs_out_of_memory(context, index, arch):
        if index == 1:
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real(context, index, arch)

    monkeypatch.setattr(trial, "train_stage_one", second_runs_out_of_memory)
    result = run_search(make_cfg(*SMALL, "searcher.stage2.enabled=false", "searcher.top_k=3", run_dir=tmp_path))
    table = rows(tmp_path / "search.csv")
    assert [r["status"] for r in table] == ["ok", "failed", "ok"]
    assert float(table[1]["reward"]) == 0.0 and "simulated" in table[1]["error"]
    assert result.summary["search_failed"] == 1
    assert [c.scores["child"] for c in result.candidates if c.scores["child"] == 1] == []  # never a candidate
    # the anytime curve: the best reward of a scored child after each round, never the failure's 0
    progress = rows(tmp_path / "progress.csv")
    rewards = [float(r["reward"]) for r in table]
    assert [float(r["best_score"]) for r in progress] == [rewards[0], rewards[0], max(rewards[0], rewards[2])]


def test_search_on_a_voc_layout_folder(make_cfg, tmp_path: Path) -> None:
    from tests.conftest import TINY, write_voc_layout

    root = write_voc_layout(tmp_path / "VOC2012", num_classes=3, train=12, val=4)
    tiny = [o for o in TINY if not o.startswith("data")]
    result = run_search(
        make_cfg(
            *tiny,
            *SMALL,
            "searcher.children=2",
            "data=voc",
            f"data.root={root}",
            "data.num_classes=3",
            "data.crop_size=32",
            "data.batch_size=2",
            "data.num_workers=0",
            tiny=False,
            run_dir=tmp_path,
        )
    )
    assert [r["status"] for r in rows(tmp_path / "search.csv")] == ["ok", "ok"]
    assert 0.0 <= result.summary["search_best_reward"] <= 1.0
