"""searcher=auxcell against the authors' code (DrSleep/nas-segm-pytorch): the reward leaves
background out, PPO steps once per buffered child, the cell-position choices, what a stage-2
failure keeps, the decoder's weight decay, the paper-scale preset and the Polyak rule."""

from __future__ import annotations

import dataclasses
import logging
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from segnas.metrics import geometric_reward, scores_from_confusion
from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.child import Objective, Stage, _run_epochs, train_stage1, train_stage2
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.features import FeatureCache
from segnas.searchers.auxcell.module import AuxCellSearchModule, _objective, _stage
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.settings import Policy
from segnas.searchers.auxcell.trial import run_round
from segnas.settings import schema
from segnas.settings.run import TaskType
from segnas.spaces.auxcell import PAPER_ENCODINGS, AuxCellSpace
from tests.conftest import handed

# 8. the reward leaves background out --------------------------------------------------------


def test_omitted_classes_leave_the_means_but_not_the_matrix() -> None:
    # the authors (src/engine/inference.py) compute every IoU from the whole matrix and only drop
    # the omitted classes from the means: class 0 pixels predicted as 1 still count against class 1
    confusion = torch.tensor([[5, 1, 0], [2, 2, 1], [0, 1, 3]])
    iou1, iou2 = 2 / (5 + 4 - 2), 3 / (4 + 4 - 3)  # ground truth 5, 4; predicted 4, 4
    scores = scores_from_confusion(confusion, omit=[0])
    assert scores["mIoU"] == pytest.approx((iou1 + iou2) / 2)
    assert scores["fwIoU"] == pytest.approx((5 * iou1 + 4 * iou2) / 9)  # frequencies among kept classes
    assert scores["mean_class_acc"] == pytest.approx((2 / 5 + 3 / 4) / 2)
    assert scores["pixel_acc"] == pytest.approx(10 / 15)  # every pixel, as before
    assert scores_from_confusion(confusion)["mIoU"] == pytest.approx((5 / 8 + iou1 + iou2) / 3)


def all_background_reward(cfg) -> float:
    reward = schema.load(cfg).searcher.reward
    objective, _ = _objective(TaskType.segmentation, reward, SimpleNamespace(num_classes=3, ignore_index=255))
    metrics = objective.metrics()
    target = torch.tensor([[[0, 0, 1], [0, 2, 2]]])
    metrics.update(torch.zeros_like(target), target)
    return geometric_reward(objective.scores(metrics.compute()))


def test_an_all_background_prediction_earns_nothing_by_default(make_cfg) -> None:
    assert all_background_reward(make_cfg("searcher=auxcell")) == 0.0
    # every class scored: background IoU 3/6, mIoU 1/6, fwIoU 1/2 * 1/2, mean accuracy 1/3
    every = all_background_reward(make_cfg("searcher=auxcell", "searcher.reward.omit_classes=[]"))
    assert every == pytest.approx((1 / 6 * 1 / 4 * 1 / 3) ** (1 / 3))


# 9. PPO: one optimiser step per buffered child ----------------------------------------------


def test_ppo_steps_once_per_buffered_child_on_one_child_each_as_the_authors(make_cfg) -> None:
    settings = schema.load(make_cfg("searcher=auxcell")).searcher.controller
    policy = build_policy(Policy.ppo, Controller(decisions.choices(), hidden_size=8, num_layers=1), settings)  # small
    assert (policy.clip, policy.epochs, policy.entropy_coef, policy.grad_clip, policy.baseline_decay) == (
        0.1,
        1,
        0.0,
        2.0,
        0.95,
    )
    assert policy.optimizer.defaults["lr"] == 1e-4 and policy.buffer.maxlen == 100
    steps, batches = [], []
    policy.optimizer.step = lambda *args, **kwargs: steps.append(1)  # a counting stub
    forward = policy.controller.forward
    policy.controller.forward = lambda actions: batches.append(len(actions)) or forward(actions)
    generator = torch.Generator().manual_seed(0)
    for count in (1, 2, 3):  # ours never takes the empty slots for children (the authors' buffer does)
        actions, log_prob, _ = policy.sample(generator)
        steps.clear()
        policy.update(actions, log_prob, 0.5)
        assert len(steps) == count
    for _ in range(96):
        policy.buffer.append((actions, log_prob, 0.5))
    for _ in range(2):  # a full buffer, then one that keeps its last 100
        steps.clear()
        policy.update(actions, log_prob, 0.5)
        assert len(steps) == 100
    assert set(batches) == {1}


# 10. cell input positions -------------------------------------------------------------------


def test_released_positions_offer_one_choice_fewer_per_cell_layer(make_cfg) -> None:
    assert make_cfg("searcher=auxcell").searcher.controller.positions == "extended"
    extended, released = decisions.choices("extended"), decisions.choices("released")
    positions = [7, 8, 11, 12, 15, 16]  # the two position decisions of each cell layer
    assert [extended[i] for i in positions] == [2, 2, 5, 5, 8, 8]
    assert [released[i] for i in positions] == [1, 1, 4, 4, 7, 7]
    assert [e for i, e in enumerate(extended) if i not in positions] == [
        r for i, r in enumerate(released) if i not in positions
    ]
    module = AuxCellSearchModule(
        *handed(make_cfg("searcher=auxcell", "searcher.controller.positions=released")), world=1
    )
    assert module.policy.controller.choices == released


def test_the_published_designs_encode_and_decode_and_arch1_needs_the_extended_positions() -> None:
    space = AuxCellSpace()
    reachable = {}
    for name, encoding in PAPER_ENCODINGS.items():
        arch = space.validate({"encoding": encoding})
        actions = decisions.from_arch(arch)
        assert space.validate(decisions.to_arch(actions)) == arch
        assert all(a < n for a, n in zip(actions, decisions.choices("extended")))
        reachable[name] = all(a < n for a, n in zip(actions, decisions.choices("released")))
    # arch1's first cell layer reads position 1 (the first op's output), which the released controller never offers
    assert reachable == {"auxcell-arch0": True, "auxcell-arch1": False, "auxcell-arch2": True}


# 11. a stage-2 failure keeps the stage-1 reward ---------------------------------------------


def test_a_child_failing_in_stage_two_keeps_its_stage_one_reward(monkeypatch, caplog) -> None:
    from segnas.searchers.auxcell import trial

    def stage_one(context, index, arch):
        return nn.Identity(), {"stage1_reward": 0.4, "reward": 0.4}

    def stage_two(context, decoder, result):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(trial, "train_stage_one", stage_one)
    monkeypatch.setattr(trial, "train_stage_two", stage_two)
    context = SimpleNamespace(stage2=object(), stopper=None)
    with caplog.at_level(logging.ERROR):
        result = run_round(context, [(5, {})])[0]
    assert result["status"] == "stage2_failed" and result["reward"] == 0.4 and result["stage1_reward"] == 0.4
    assert "simulated" in result["error"] and result["stopped_early"] is False
    assert "child 5 failed in stage 2" in caplog.text


# 12. the decoder's weight decay (the authors' DEC_WD, Adam's L2 term) -----------------------


class Idle(nn.Module):
    """A decoder with a parameter the loss does not depend on: its gradient is zero, so it moves
    only by the weight decay."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(2, 2, 1)
        self.idle = nn.Parameter(torch.ones(1))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.head(features[0]) + 0.0 * self.idle, []


def adam_with_l2(p: float, lr: float, decay: float, steps: int, betas=(0.9, 0.999), eps=1e-8) -> float:
    """Adam (Kingma & Ba) on the gradient decay * p alone, by hand."""
    m = v = 0.0
    for t in range(1, steps + 1):
        g = decay * p
        m, v = betas[0] * m + (1 - betas[0]) * g, betas[1] * v + (1 - betas[1]) * g * g
        p -= lr * (m / (1 - betas[0] ** t)) / (math.sqrt(v / (1 - betas[1] ** t)) + eps)
    return p


CE = Objective("mask", nn.functional.cross_entropy, None, None)


def test_both_stages_decay_the_decoder_as_the_authors_adam(make_cfg) -> None:
    settings = schema.load(make_cfg("searcher=auxcell")).searcher
    for section in (settings.stage1, settings.stage2):
        assert section.decoder_weight_decay == 1e-5
    torch.manual_seed(0)
    cache = FeatureCache([torch.randn(4, 2, 4, 4)], torch.randint(0, 2, (4, 4, 4)), None)
    images = [{"image": torch.randn(2, 2, 4, 4), "mask": torch.randint(0, 2, (2, 4, 4))} for _ in range(2)]
    for decay in (1e-5, 0.0):
        stage = _stage(settings.stage1, 2)
        stage.decoder_weight_decay, stage.polyak, stage.epochs = decay, None, 1
        decoder = Idle()
        assert train_stage1(decoder, cache, stage, 0.0, 0.0, torch.Generator(), CE) == 2
        assert decoder.idle.item() == pytest.approx(adam_with_l2(1.0, stage.decoder_lr, decay, 2), abs=1e-7)
        stage = _stage(settings.stage2, 2)
        stage.decoder_weight_decay, stage.polyak = decay, None
        decoder = Idle()
        assert train_stage2(nn.Sequential(nn.Conv2d(2, 2, 1), Listed()), decoder, images, stage, 0.0, CE) == 2
        assert decoder.idle.item() == pytest.approx(adam_with_l2(1.0, stage.decoder_lr, decay, 2), abs=1e-7)
    assert adam_with_l2(1.0, 3e-3, 1e-5, 2) < 1 - 5e-3  # Adam's L2 moves it by about lr a step (AdamW: 6e-8)


class Listed(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


# 13. the paper-scale preset, stage crops and the stage-2 loss resolution --------------------


def test_the_paper_preset_says_the_authors_crops_batches_and_loss_resolution(make_cfg) -> None:
    cfg = make_cfg("experiment=auxcell_voc_sbd", tiny=False)
    s = cfg.searcher
    assert (s.stage1.crop_size, s.stage1.batch_size, s.stage2.crop_size, cfg.data.batch_size) == (256, 64, 350, 32)
    assert list(s.scale_range) == [0.7, 1.4] and s.reward.crop_size == 400 and s.stage2.loss_resolution == "output"
    default = make_cfg("searcher=auxcell").searcher
    assert (
        default.stage1.crop_size,
        default.stage2.crop_size,
        default.scale_range,
        default.stage2.loss_resolution,
    ) == (None, None, None, "labels")


def test_each_stage_trains_on_its_own_crops(make_cfg) -> None:
    cfg = make_cfg(
        "searcher=auxcell",
        "searcher.device=cpu",
        "searcher.stage1.num_crops=4",
        "searcher.stage1.batch_size=4",
        "searcher.reward.holdout_min=4",
        "searcher.stage1.crop_size=24",
        "searcher.stage2.crop_size=40",
        "searcher.scale_range=[1.0,1.0]",
    )
    module = AuxCellSearchModule(*handed(cfg), world=1)
    module.setup("fit")
    assert module.context.stage1_data.labels.shape[-2:] == (6, 6)  # 24 px crops, labels at stride 4
    batch = next(iter(module.context.stage2_loader))
    assert batch["image"].shape[-2:] == (40, 40)


def test_the_stage_two_loss_is_taken_where_the_key_says() -> None:
    sizes = []

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sizes.append((tuple(output.shape[-2:]), tuple(target.shape[-2:])))
        return nn.functional.cross_entropy(output, target, ignore_index=255)

    images = [{"image": torch.randn(2, 2, 8, 8), "mask": torch.randint(0, 2, (2, 8, 8))}]
    encoder = nn.Sequential(nn.Conv2d(2, 2, 1), nn.AvgPool2d(4), Listed())  # outputs at stride 4
    for where, expected in (("labels", (8, 8)), ("output", (2, 2))):
        sizes.clear()
        stage = Stage(epochs=1, batch_size=2, polyak=None, loss_resolution=where)
        train_stage2(encoder, Idle(), images, stage, 0.0, Objective("mask", loss, None, None))
        assert sizes == [(expected, expected)], where


# 14. Polyak decay against the number of steps -----------------------------------------------


def kept_after(stage: Stage, steps: int) -> float:
    """The share of the weights an epoch starts from in the average at its end (one epoch of
    ``steps``; each step sets the weight to 0)."""
    stage = dataclasses.replace(stage, epochs=1)
    weight = nn.Linear(1, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        weight.weight.fill_(1.0)

    def step(batch: None) -> None:
        with torch.no_grad():
            weight.weight.zero_()

    _run_epochs(stage, lambda epoch: [None] * steps, step, weight, steps)
    return weight.weight.item()


def test_an_epoch_start_keeps_the_papers_share_of_the_average_whatever_its_length(make_cfg) -> None:
    settings = schema.load(make_cfg("searcher=auxcell")).searcher
    stage1, stage2 = _stage(settings.stage1, 8), _stage(settings.stage2, 8)
    # the paper's epochs: 4000 cached crops // 64 = 62 steps; 90 % of train_aug (9523) // 32 = 297
    assert (stage1.polyak_reference_steps, stage2.polyak_reference_steps) == (62, 297)
    for stage in (stage1, stage2):
        paper = stage.polyak**stage.polyak_reference_steps
        assert kept_after(stage, stage.polyak_reference_steps) == pytest.approx(paper)  # the authors' decay
        for steps in (1, 8, 500):
            assert kept_after(stage, steps) == pytest.approx(paper, rel=1e-4), steps
    stage2.polyak_reference_steps = None  # the decay per step as given: 8 steps barely move the average
    assert kept_after(stage2, 8) == pytest.approx(0.99**8)
