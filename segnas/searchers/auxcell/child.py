"""Training and scoring one child: stage 1 on cached encoder features, stage 2 end to end.

Losses (the paper's): cross-entropy (ignore 255) on the main output, plus ``aux_weight`` × the
cross-entropy of every auxiliary head, plus, in stage 1 with a teacher, ``kd_weight`` × the MSE
between the main logits and the teacher's. Logits are resized bilinearly to the labels' size.
A non-finite loss raises FloatingPointError, so a diverged child is reported as a failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from segnas.metrics import SegmentationMetrics, scores_from_confusion
from segnas.nn.auxcell import AuxCellDecoder
from segnas.searchers.auxcell.features import FeatureCache, OnTheFly
from segnas.searchers.auxcell.polyak import PolyakAverage


@dataclass
class Stage:
    """One stage's settings (``searcher.stage1`` / ``searcher.stage2``)."""

    epochs: int
    batch_size: int
    decoder_lr: float = 3e-3
    encoder_lr: float = 1e-3
    encoder_momentum: float = 0.9
    encoder_weight_decay: float = 1e-5
    grad_clip: float = 3.0
    polyak: float | None = 0.9
    max_batches: int | None = None


def _resize(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def child_loss(
    logits: torch.Tensor, aux: list[torch.Tensor], labels: torch.Tensor, teacher: torch.Tensor | None,
    aux_weight: float, kd_weight: float, ignore_index: int = 255,
) -> torch.Tensor:
    size = labels.shape[-2:]
    logits = _resize(logits, size)
    loss = F.cross_entropy(logits, labels, ignore_index=ignore_index)
    for head in aux:
        loss = loss + aux_weight * F.cross_entropy(_resize(head, size), labels, ignore_index=ignore_index)
    if teacher is not None and kd_weight > 0:
        loss = loss + kd_weight * F.mse_loss(logits, teacher)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss ({float(loss)})")
    return loss


def _step(loss: torch.Tensor, optimizers: Iterable[torch.optim.Optimizer], clips: Iterable[tuple[nn.Module, float]]) -> None:
    optimizers = list(optimizers)
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    for module, clip in clips:
        if clip > 0:
            nn.utils.clip_grad_norm_(module.parameters(), clip)
    for optimizer in optimizers:
        optimizer.step()


def train_stage1(
    decoder: AuxCellDecoder, data: FeatureCache | OnTheFly, stage: Stage, aux_weight: float, kd_weight: float,
    generator: torch.Generator, ignore_index: int = 255,
) -> int:
    """Train the decoder alone on encoder features; returns optimiser steps taken."""
    optimizer = torch.optim.Adam(decoder.parameters(), lr=stage.decoder_lr)
    average = PolyakAverage(decoder, stage.polyak) if stage.polyak else None
    decoder.train()
    steps = 0
    for _ in range(stage.epochs):
        for index, (features, labels, teacher) in enumerate(data.batches(stage.batch_size, generator)):
            if stage.max_batches is not None and index >= stage.max_batches:
                break
            logits, aux = decoder(features)
            loss = child_loss(logits, aux, labels, teacher, aux_weight, kd_weight, ignore_index)
            _step(loss, [optimizer], [(decoder, stage.grad_clip)])
            steps += 1
            if average is not None:
                average.update()
        if average is not None:
            average.apply()
    return steps


def train_stage2(
    encoder: nn.Module, decoder: AuxCellDecoder, loader: DataLoader, stage: Stage, aux_weight: float,
    ignore_index: int = 255,
) -> int:
    """Train encoder (SGD) and decoder (Adam) together on images; returns optimiser steps taken."""
    encoder_optimizer = torch.optim.SGD(encoder.parameters(), lr=stage.encoder_lr, momentum=stage.encoder_momentum,
                                        weight_decay=stage.encoder_weight_decay)
    decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=stage.decoder_lr)
    both = nn.ModuleList([encoder, decoder])
    average = PolyakAverage(both, stage.polyak) if stage.polyak else None
    both.train()
    steps = 0
    for _ in range(stage.epochs):
        for index, batch in enumerate(loader):
            if stage.max_batches is not None and index >= stage.max_batches:
                break
            logits, aux = decoder(encoder(batch["image"]))
            loss = child_loss(logits, aux, batch["mask"], None, aux_weight, 0.0, ignore_index)
            _step(loss, [encoder_optimizer, decoder_optimizer], [(encoder, stage.grad_clip), (decoder, stage.grad_clip)])
            steps += 1
            if average is not None:
                average.update()
        if average is not None:
            average.apply()
    return steps


@torch.no_grad()
def score_features(decoder: AuxCellDecoder, holdout: FeatureCache, num_classes: int, ignore_index: int = 255) -> dict[str, float]:
    """Scores of the decoder on cached held-out features (labels at full resolution)."""
    decoder.eval()
    metrics = SegmentationMetrics(num_classes, ignore_index)
    for features, labels, _ in holdout.batches(8, shuffle=False):
        logits, _ = decoder(features)
        metrics.update(_resize(logits, labels.shape[-2:]), labels)
    return scores_from_confusion(metrics.compute())


@torch.no_grad()
def score_images(
    encoder: nn.Module, decoder: AuxCellDecoder, loader: DataLoader, num_classes: int, ignore_index: int = 255
) -> dict[str, float]:
    """Scores of encoder + decoder on held-out images."""
    encoder.eval()
    decoder.eval()
    metrics = SegmentationMetrics(num_classes, ignore_index)
    for batch in loader:
        logits, _ = decoder(encoder(batch["image"]))
        metrics.update(_resize(logits, batch["mask"].shape[-2:]), batch["mask"])
    return scores_from_confusion(metrics.compute())
