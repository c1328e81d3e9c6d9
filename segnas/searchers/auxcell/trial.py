"""Children from decisions to rewards, one round at a time: build each decoder, stage 1, the
early-stopping check, stage 2, and the failure rule.

A round is the children sampled from one controller state. Rank ``r`` of ``world`` trains the
round's children ``r, r + world, ...``: stage 1 for each, then every rank gathers the stage-1
rewards and takes the progressive early-stopping decisions for the whole round, in child order
(the same ``step`` calls, on the same rewards, on every rank, so the stopper stays identical
everywhere and equals a one-process run of the same round), then stage 2 for its children that
passed, and the results are gathered. With one process, a round of one child is the paper's
loop. A child's result depends only on its index, its decisions and the stopper, never on which
rank trained it.

A child whose training raises RuntimeError (out of memory included) or diverges (non-finite
loss) is recorded with its error message and the search goes on; the failure is visible in
``search.csv`` and the log rather than disguised as a poor network. A child that fails in stage 1
has nothing measured: status ``failed``, reward 0 (the controller learns that such decoders pay
nothing), and no early-stopping check. A child that fails in stage 2 keeps what stage 1 measured:
status ``stage2_failed``, its stage-1 reward as the reward (what the controller learns from, as
for a child stopped after stage 1: the authors' loop feeds the last reward it validated), no
stage-2 reward. Either failure is never a candidate for retraining.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from segnas.metrics import geometric_reward
from segnas.nn.auxcell import AuxCellDecoder
from segnas.searchers.auxcell.child import (
    Objective,
    Stage,
    score_features,
    score_images,
    train_stage1,
    train_stage2,
)
from segnas.searchers.auxcell.early_stopping import ProgressiveStopper
from segnas.searchers.auxcell.features import FeatureCache, OnTheFly, module_device
from segnas.searchers.auxcell.records import ChildResult
from segnas.spaces.auxcell import build_decoder
from segnas.training.depth import init_depth_output

log = logging.getLogger(__name__)


@dataclass
class ChildContext:
    """What every child shares: the encoder's initial weights, the data and the settings.

    ``out_channels`` is the decoder's output: the class count, or 1 for depth (``objective``);
    ``output_bias`` (depth): the mean training depth every child's output layers start at.
    """

    encoder: nn.Module
    stage1_data: FeatureCache | OnTheFly
    holdout_features: FeatureCache
    holdout_loader: DataLoader
    stage2_loader: DataLoader | None
    stage1: Stage
    stage2: Stage | None
    stopper: ProgressiveStopper | None
    out_channels: int
    aux_weight: float
    aux_cell: bool
    kd_weight: float
    reward_metrics: tuple[str, ...]
    seed: int
    objective: Objective
    output_bias: float | None = None


@dataclass
class _Child:
    """A child between its two stages (``decoder`` None once it failed)."""

    index: int
    arch: dict[str, Any]
    decoder: AuxCellDecoder | None
    result: ChildResult
    seconds: float = 0.0


def run_round(
    context: ChildContext,
    children: Sequence[tuple[int, dict[str, Any]]],
    rank: int = 0,
    world: int = 1,
    gather: Callable[[Any], list[Any]] | None = None,
) -> list[ChildResult]:
    """Results of ``children`` (index, search arch) in order, on every rank.

    ``gather(value)`` returns every rank's value in rank order (:func:`~segnas.searchers.
    distributed.all_gather`; by default this process alone). Never raises for a child's failure.
    """
    gather = gather or (lambda value: [value])
    mine = [
        _guarded(lambda c=(index, arch): _stage_one(context, *c), index, arch) for index, arch in children[rank::world]
    ]
    stage1 = _in_order(gather([(c.index, c.result) for c in mine]))
    passed = _decide(context, [stage1[index] for index, _ in children])
    for child in mine:
        if child.decoder is not None and passed[child.index]:
            done = _guarded(lambda c=child: _stage_two(context, c), child.index, child.arch, child.result)
            child.result, child.seconds = {**child.result, **done.result}, child.seconds + done.seconds
        child.result["child_s"] = round(child.seconds, 3)
    final = _in_order(gather([(c.index, c.result) for c in mine]))
    return [final[index] for index, _ in children]


def _in_order(parts: list[list[tuple[int, ChildResult]]]) -> dict[int, ChildResult]:
    return {index: result for part in parts for index, result in part}


def _decide(context: ChildContext, stage1: list[ChildResult]) -> dict[int, bool]:
    """Which of the round's children go on to stage 2 (failed children never do)."""
    passed = {}
    for result in stage1:
        index, ok = result["child"], result["status"] == "ok"
        if not ok or context.stage2 is None:
            passed[index] = False
        else:
            passed[index] = context.stopper is None or context.stopper.step(result["stage1_reward"])
    return passed


def _guarded(
    train: Callable[[], _Child], index: int, arch: dict[str, Any], stage1: ChildResult | None = None
) -> _Child:
    """``train()``, or the failed child: ``stage1`` is the stage-1 result when stage 2 failed."""
    start = time.perf_counter()
    try:
        child = train()
    except (RuntimeError, FloatingPointError) as err:
        error = f"{type(err).__name__}: {err}"
        if stage1 is None:
            log.error("child %d failed (%s); it gets reward 0 and the search goes on", index, error)
            result = {"child": index, "status": "failed", "error": error, "reward": 0.0, "stopped_early": False}
        else:
            log.error(
                "child %d failed in stage 2 (%s); it keeps its stage-1 reward %.4f and the search goes on",
                index,
                error,
                stage1["stage1_reward"],
            )
            result = {
                **stage1,
                "status": "stage2_failed",
                "error": error,
                "reward": stage1["stage1_reward"],
                "stopped_early": False,
            }
        child = _Child(index, arch, None, result)
    child.seconds = time.perf_counter() - start
    return child


def _stage_one(context: ChildContext, index: int, arch: dict[str, Any]) -> _Child:
    decoder, result = train_stage_one(context, index, arch)
    result.update(child=index, status="ok", error=None, stopped_early=context.stage2 is not None)
    return _Child(index, arch, decoder, result)


def _stage_two(context: ChildContext, child: _Child) -> _Child:
    result = train_stage_two(context, child.decoder, dict(child.result, stopped_early=False))
    return _Child(child.index, child.arch, None, result)


def train_stage_one(context: ChildContext, index: int, arch: dict[str, Any]) -> tuple[AuxCellDecoder, dict[str, Any]]:
    """Build the child's decoder on the search device, train it on the stage-1 data and score it
    on the held-out features; returns the trained decoder and the result so far."""
    torch.manual_seed(context.seed * 100_003 + index)  # a child's init does not depend on resume or rank
    generator = torch.Generator().manual_seed(context.seed * 100_003 + index)
    channels = context.encoder.feature_info.channels()
    decoder = build_decoder(
        arch, channels, context.out_channels, aux_heads=context.aux_weight > 0, aux_cell=context.aux_cell
    )
    if context.output_bias is not None:
        init_depth_output(decoder, context.output_bias)
    decoder.to(module_device(context.encoder))
    result: dict[str, Any] = {
        "search_params": sum(p.numel() for n, p in decoder.named_parameters() if not n.startswith("aux_heads"))
        + sum(p.numel() for p in context.encoder.parameters()),
    }
    tick = time.perf_counter()
    result["stage1_steps"] = train_stage1(
        decoder,
        context.stage1_data,
        context.stage1,
        context.aux_weight,
        context.kd_weight,
        generator,
        context.objective,
    )
    scores = score_features(decoder, context.holdout_features, context.objective)
    result.update(
        stage1_reward=geometric_reward(scores, context.reward_metrics), stage1_s=round(time.perf_counter() - tick, 3)
    )
    result.update(scores)
    result["reward"] = result["stage1_reward"]
    return decoder, result


def train_stage_two(context: ChildContext, decoder: AuxCellDecoder, result: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune a copy of the shared encoder with the child's decoder on images, score on the
    held-out images; ``result`` (stage 1's) gains the stage-2 scores and reward."""
    tick = time.perf_counter()
    encoder = copy.deepcopy(context.encoder)
    result["stage2_steps"] = train_stage2(
        encoder, decoder, context.stage2_loader, context.stage2, context.aux_weight, context.objective
    )
    scores = score_images(encoder, decoder, context.holdout_loader, context.objective)
    result.update(scores)
    result.update(
        stage2_reward=geometric_reward(scores, context.reward_metrics), stage2_s=round(time.perf_counter() - tick, 3)
    )
    result["reward"] = result["stage2_reward"]
    return result
