"""Scoring a sub-network without fine-tuning: optional BatchNorm recalibration on a fixed
calibration subset, then mIoU on a fixed validation subset, in a plain ``no_grad`` loop.

Why recalibrate: a sub-network's layers see other input statistics than the full network's
did, so the running mean/variance the supernet learned no longer match (once-for-all). FMAS
itself scores with the inherited statistics; ``recalibrate=False`` keeps that mode.

Why a plain loop: a Lightning Trainer per candidate costs seconds of set-up and leaks memory over
thousands of candidates; the batches are also loaded once and reused for every candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from segnas.evaluation import EvalProtocol
from segnas.metrics import SegmentationMetrics, scores_from_confusion


def preload(datamodule: Any, dataset: Dataset, device: torch.device | str = "cpu") -> list[dict[str, torch.Tensor]]:
    """Every batch of ``dataset`` (eval batching, fixed order; images of different sizes padded,
    with their true ``size``) held in memory on ``device``."""
    return [{key: batch[key].to(device) for key in ("image", "mask", "size")}
            for batch in datamodule.loader(dataset, train=False)]


def recalibrate_bn(net: nn.Module, images: Iterable[torch.Tensor]) -> nn.Module:
    """Replace every BatchNorm's running statistics by those of ``images``, in place.

    Statistics restart from zero and accumulate as an exact cumulative average over the batches
    (``momentum=None``), so the result does not depend on a momentum or on the old statistics and
    is the same on every call. Only BatchNorm layers run in train mode (dropout stays off). Batches
    of one image are skipped: BatchNorm after global pooling cannot normalise a single value.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    net.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        with torch.no_grad():
            for x in images:
                if x.shape[0] >= 2:
                    net(x)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        net.eval()
    return net


def confusion(net: nn.Module, batches: Sequence[dict[str, torch.Tensor]], num_classes: int,
              ignore_index: int = 255, protocol: EvalProtocol | None = None) -> torch.Tensor:
    """The (num_classes, num_classes) confusion matrix of ``net`` (eval mode) over ``batches``,
    each image predicted by ``protocol`` (default: whole, full resolution).

    Never summed over DDP ranks: under DDP each rank scores different sub-networks.
    """
    protocol = protocol or EvalProtocol()
    metric = SegmentationMetrics(num_classes, ignore_index, sync_on_compute=False)
    net.eval()
    with torch.no_grad():
        for batch in batches:
            for logits, targets in protocol.outputs(net, batch):
                metric.update(logits, targets["mask"])
    return metric.compute()


class Scorer:
    """Scores networks on one fixed validation subset by ``protocol``, recalibrating on one fixed
    calibration subset (unpadded crops) first when ``recalibrate`` is true."""

    def __init__(self, val_batches: Sequence[dict[str, torch.Tensor]],
                 calib_batches: Sequence[dict[str, torch.Tensor]], num_classes: int,
                 ignore_index: int = 255, recalibrate: bool = True, protocol: EvalProtocol | None = None) -> None:
        self.protocol = protocol or EvalProtocol()
        self.val_batches = list(val_batches)
        self.calib_batches = list(calib_batches)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.recalibrate = recalibrate
        self.images_per_score = sum(b["image"].shape[0] for b in self.val_batches) + (
            sum(b["image"].shape[0] for b in self.calib_batches) if recalibrate else 0)

    def prepare(self, net: nn.Module) -> nn.Module:
        """``net`` as it is scored: recalibrated (in place) when asked, in eval mode."""
        if self.recalibrate:
            recalibrate_bn(net, (b["image"] for b in self.calib_batches))
        return net.eval()

    def score(self, net: nn.Module) -> dict[str, float]:
        scores = scores_from_confusion(confusion(self.prepare(net), self.val_batches, self.num_classes,
                                                 self.ignore_index, self.protocol))
        return {"miou": scores["mIoU"], "pixel_acc": scores["pixel_acc"]}
