"""One child from decisions to reward: build its decoder, stage 1, the early-stopping check,
stage 2, and the failure rule.

A child whose training raises RuntimeError (out of memory included) or diverges (non-finite
loss) is recorded with status ``failed``, its error message and reward 0, and the search goes on:
the controller learns that such decoders pay nothing, and the failure is visible in
``search.csv`` and the log rather than disguised as a poor network.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from segnas.metrics import geometric_reward
from segnas.searchers.auxcell.child import (
    Objective,
    Stage,
    score_features,
    score_images,
    train_stage1,
    train_stage2,
)
from segnas.searchers.auxcell.early_stopping import ProgressiveStopper
from segnas.searchers.auxcell.features import FeatureCache, OnTheFly
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


def run_child(context: ChildContext, index: int, arch: dict[str, Any],
              train: Callable[[ChildContext, int, dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train and score one child; never raises for a failure of the child itself."""
    start = time.perf_counter()
    try:
        result = (train or train_child)(context, index, arch)
        result["status"], result["error"] = "ok", None
    except (RuntimeError, FloatingPointError) as err:
        log.error("child %d failed (%s: %s); it gets reward 0 and the search goes on", index, type(err).__name__, err)
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}", "reward": 0.0, "stopped_early": False}
    result["child_s"] = round(time.perf_counter() - start, 3)
    return result


def train_child(context: ChildContext, index: int, arch: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(context.seed * 100_003 + index)  # a child's init does not depend on resume
    generator = torch.Generator().manual_seed(context.seed * 100_003 + index)
    channels = context.encoder.feature_info.channels()
    decoder = build_decoder(arch, channels, context.out_channels, aux_heads=context.aux_weight > 0,
                            aux_cell=context.aux_cell)
    if context.output_bias is not None:
        init_depth_output(decoder, context.output_bias)
    result: dict[str, Any] = {
        "search_params": sum(p.numel() for n, p in decoder.named_parameters() if not n.startswith("aux_heads"))
        + sum(p.numel() for p in context.encoder.parameters()),
    }
    tick = time.perf_counter()
    result["stage1_steps"] = train_stage1(decoder, context.stage1_data, context.stage1, context.aux_weight, context.kd_weight, generator,
                 context.objective)
    scores = score_features(decoder, context.holdout_features, context.objective)
    result.update(stage1_reward=geometric_reward(scores, context.reward_metrics), stage1_s=round(time.perf_counter() - tick, 3))
    result.update(scores)
    result["reward"] = result["stage1_reward"]
    result["stopped_early"] = False
    if context.stage2 is None:
        return result
    if context.stopper is not None and not context.stopper.step(result["stage1_reward"]):
        result["stopped_early"] = True
        return result
    tick = time.perf_counter()
    encoder = copy.deepcopy(context.encoder)
    result["stage2_steps"] = train_stage2(encoder, decoder, context.stage2_loader, context.stage2, context.aux_weight, context.objective)
    scores = score_images(encoder, decoder, context.holdout_loader, context.objective)
    result.update(scores)
    result.update(stage2_reward=geometric_reward(scores, context.reward_metrics), stage2_s=round(time.perf_counter() - tick, 3))
    result["reward"] = result["stage2_reward"]
    return result
