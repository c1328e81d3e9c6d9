"""Training and scoring one child: stage 1 on cached encoder features, stage 2 end to end.

Losses (the paper's): the task's loss on the main output, plus ``aux_weight`` × the same loss on
every auxiliary head, plus, in stage 1 with a teacher, ``kd_weight`` × the MSE between the main
output and the teacher's. Outputs are resized bilinearly to the targets' size; stage 1's targets
are cached at the finest encoder map's stride, and stage 2's are either the images' labels or,
with ``loss_resolution=output``, the labels resized (nearest) to the decoder's output as the
authors do. A non-finite loss raises FloatingPointError, so a diverged child is reported as a
failure.

The decoder's Adam takes ``decoder_weight_decay`` as Adam's own L2 term (``weight_decay``, added
to the gradient, not AdamW's decoupled decay), as the authors' ``create_optimisers`` does with
``DEC_WD = 1e-5`` (nas-segm-pytorch ``src/utils/solvers.py``, ``src/utils/default_args.py``).

The task is an :class:`Objective`: segmentation (cross-entropy, ignore 255; scored by the
confusion-matrix scores) or depth (berHu over valid pixels, so auxiliary heads regress depth too,
and distillation is MSE to a depth teacher's map; scored by RMSE, REL and δ1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from segnas.data.epoch_seeded import at_epoch
from segnas.metrics import DepthMetrics, SegmentationMetrics, scores_from_confusion
from segnas.nn.auxcell import AuxCellDecoder
from segnas.searchers.auxcell.features import FeatureCache, OnTheFly, module_device, resize_target
from segnas.searchers.auxcell.polyak import PolyakAverage, scaled_decay
from segnas.searchers.auxcell.settings import LossResolution
from segnas.training.depth import berhu_loss


@dataclass
class Stage:
    """One stage's training settings (from :class:`~.settings.Stage1Settings` /
    :class:`~.settings.Stage2Settings` and the stage's batch size; the encoder's and
    ``loss_resolution`` only act in stage 2)."""

    epochs: int
    batch_size: int
    decoder_lr: float = 3e-3
    decoder_weight_decay: float = 1e-5
    encoder_lr: float = 1e-3
    encoder_momentum: float = 0.9
    encoder_weight_decay: float = 1e-5
    grad_clip: float = 3.0
    polyak: float | None = 0.9
    polyak_reference_steps: int | None = None
    max_batches: int | None = None
    loss_resolution: LossResolution = LossResolution.labels


@dataclass(frozen=True)
class Objective:
    """What a child learns and how it is scored.

    ``target``: the batch key of the targets; ``loss(output, target)`` with the output already at
    the target's size; ``metrics()``: a fresh torchmetrics accumulator, updated with
    ``(output, target)``; ``scores(metrics.compute())``: the named scores the reward reads.
    """

    target: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: Callable[[], Any]
    scores: Callable[[Any], dict[str, float]]


def segmentation_objective(num_classes: int, ignore_index: int = 255, omit_classes: Sequence[int] = ()) -> Objective:
    """``omit_classes`` are left out of the scores' class means (the authors leave background out
    of the reward: ``searcher.reward.omit_classes``). Scores never sync across ranks: under DDP
    each rank scores its own child."""
    return Objective(
        "mask",
        partial(F.cross_entropy, ignore_index=ignore_index),
        partial(SegmentationMetrics, num_classes, ignore_index, sync_on_compute=False),
        partial(scores_from_confusion, omit=tuple(omit_classes)),
    )


def depth_objective() -> Objective:
    """Depth targets mark unknown pixels with 0 (the transforms' contract), which is how the
    cached targets, which keep no separate validity plane, stay masked."""
    return Objective("depth", berhu_loss, partial(DepthMetrics, sync_on_compute=False), dict)


def _resize(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def child_loss(
    logits: torch.Tensor,
    aux: list[torch.Tensor],
    labels: torch.Tensor,
    teacher: torch.Tensor | None,
    aux_weight: float,
    kd_weight: float,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``criterion`` (default: cross-entropy, ignore 255) on the main output and every auxiliary
    head, plus the distillation term."""
    criterion = criterion or partial(F.cross_entropy, ignore_index=255)
    size = labels.shape[-2:]
    logits = _resize(logits, size)
    loss = criterion(logits, labels)
    for head in aux:
        loss = loss + aux_weight * criterion(_resize(head, size), labels)
    if teacher is not None and kd_weight > 0:
        loss = loss + kd_weight * F.mse_loss(logits, teacher)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss ({float(loss)})")
    return loss


def _step(
    loss: torch.Tensor, optimizers: Iterable[torch.optim.Optimizer], clips: Iterable[tuple[nn.Module, float]]
) -> None:
    optimizers = list(optimizers)
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    for module, clip in clips:
        if clip > 0:
            nn.utils.clip_grad_norm_(module.parameters(), clip)
    for optimizer in optimizers:
        optimizer.step()


def _run_epochs(
    stage: Stage,
    batches: Callable[[int], Iterable[Any]],
    train_step: Callable[[Any], None],
    averaged: nn.Module,
    available: int,
) -> int:
    """``stage.epochs`` passes over ``batches(epoch)`` (at most ``stage.max_batches`` each, of the
    ``available`` per pass), Polyak averaging ``averaged`` after every step and swapping the
    average in at every epoch's end, as both stages do (the authors' ``apply_polyak`` after every
    segmentation epoch, nas-segm-pytorch ``src/main_search.py``); returns the optimiser steps taken.
    The decay is scaled to the epoch's length (:func:`.polyak.scaled_decay`)."""
    per_epoch = available if stage.max_batches is None else min(available, stage.max_batches)
    average = (
        PolyakAverage(averaged, scaled_decay(stage.polyak, stage.polyak_reference_steps, per_epoch))
        if stage.polyak
        else None
    )
    steps = 0
    for epoch in range(stage.epochs):
        for index, batch in enumerate(batches(epoch)):
            if stage.max_batches is not None and index >= stage.max_batches:
                break
            train_step(batch)
            steps += 1
            if average is not None:
                average.update()
        if average is not None:
            average.apply()
    return steps


def train_stage1(
    decoder: AuxCellDecoder,
    data: FeatureCache | OnTheFly,
    stage: Stage,
    aux_weight: float,
    kd_weight: float,
    generator: torch.Generator,
    objective: Objective,
) -> int:
    """Train the decoder alone on encoder features; returns optimiser steps taken."""
    optimizer = torch.optim.Adam(decoder.parameters(), lr=stage.decoder_lr, weight_decay=stage.decoder_weight_decay)
    decoder.train()

    def train_step(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> None:
        features, labels, teacher = batch
        logits, aux = decoder(features)
        loss = child_loss(logits, aux, labels, teacher, aux_weight, kd_weight, objective.loss)
        _step(loss, [optimizer], [(decoder, stage.grad_clip)])

    return _run_epochs(
        stage,
        lambda epoch: data.batches(stage.batch_size, generator),
        train_step,
        decoder,
        len(data) // stage.batch_size,
    )


def train_stage2(
    encoder: nn.Module,
    decoder: AuxCellDecoder,
    loader: DataLoader,
    stage: Stage,
    aux_weight: float,
    objective: Objective,
) -> int:
    """Train encoder (SGD) and decoder (Adam) together on images; returns optimiser steps taken.
    Epoch ``e`` replays the loader's epoch ``e`` (epoch-seeded loaders), the same for every child."""
    encoder_optimizer = torch.optim.SGD(
        encoder.parameters(),
        lr=stage.encoder_lr,
        momentum=stage.encoder_momentum,
        weight_decay=stage.encoder_weight_decay,
    )
    decoder_optimizer = torch.optim.Adam(
        decoder.parameters(), lr=stage.decoder_lr, weight_decay=stage.decoder_weight_decay
    )
    both = nn.ModuleList([encoder, decoder])
    both.train()
    device = module_device(encoder)

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        logits, aux = decoder(encoder(batch["image"].to(device, non_blocking=True)))
        target = batch[objective.target].to(device, non_blocking=True)
        if (
            stage.loss_resolution == LossResolution.output
        ):  # the authors' train_segmenter: labels to the output, nearest
            target = resize_target(target, logits.shape[-2:])
        loss = child_loss(logits, aux, target, None, aux_weight, 0.0, objective.loss)
        _step(loss, [encoder_optimizer, decoder_optimizer], [(encoder, stage.grad_clip), (decoder, stage.grad_clip)])

    return _run_epochs(stage, lambda epoch: at_epoch(loader, epoch), train_step, both, len(loader))


@torch.no_grad()
def score_features(decoder: AuxCellDecoder, holdout: FeatureCache, objective: Objective) -> dict[str, float]:
    """Scores of the decoder on cached held-out features (targets at full resolution)."""
    decoder.eval()
    metrics = objective.metrics().to(module_device(decoder))
    for features, labels, _ in holdout.batches(8, shuffle=False):
        logits, _ = decoder(features)
        metrics.update(_resize(logits, labels.shape[-2:]), labels)
    return objective.scores(metrics.compute())


@torch.no_grad()
def score_images(
    encoder: nn.Module, decoder: AuxCellDecoder, loader: DataLoader, objective: Objective
) -> dict[str, float]:
    """Scores of encoder + decoder on held-out images."""
    encoder.eval()
    decoder.eval()
    device = module_device(encoder)
    metrics = objective.metrics().to(device)
    for batch in loader:
        logits, _ = decoder(encoder(batch["image"].to(device, non_blocking=True)))
        target = batch[objective.target].to(device, non_blocking=True)
        metrics.update(_resize(logits, target.shape[-2:]), target)
    return objective.scores(metrics.compute())
