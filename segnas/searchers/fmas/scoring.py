"""Scoring a sub-network without fine-tuning: optional BatchNorm recalibration on a fixed
calibration subset, then mIoU on a fixed validation subset, in a plain ``no_grad`` loop.

Why recalibrate: a sub-network's layers see other input statistics than the full network's
did, so the running mean/variance the supernet learned no longer match (once-for-all). FMAS
itself scores with the inherited statistics; ``recalibrate=False`` keeps that mode.

Why a plain loop: a Lightning Trainer per candidate costs seconds of set-up and leaks memory over
thousands of candidates; the batches are also loaded once and reused for every candidate.

How the work is batched (issue 14, item 4): every candidate runs the same images, so they are
laid out once for speed. The validation images are regrouped by size across the loader's batches
(:func:`regroup`), so a small sub-network runs a few large batches instead of many small ones; in
eval mode an image's prediction does not depend on its batch, so the score is the same up to
float32 rounding (kernels sum in another order; a near-tied pixel may flip). The
calibration batches stay as the loader made them, because the statistics are an average over
those batches. Images are stored channels-last, which oneDNN's CPU convolutions run faster
(measured on 2 cores, 64 px: about 0.7 of the time). The weights are not converted, so
sub-networks still share the supernet's tensors. The forwards run under ``inference_mode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from segnas.evaluation import EvalProtocol, size_groups
from segnas.metrics import SegmentationMetrics, scores_from_confusion


def preload(datamodule: Any, dataset: Dataset, device: torch.device | str = "cpu") -> list[dict[str, torch.Tensor]]:
    """Every batch of ``dataset`` (eval batching, fixed order; images of different sizes padded,
    with their true ``size``) held in memory on ``device``."""
    return [
        {key: batch[key].to(device) for key in ("image", "mask", "size")}
        for batch in datamodule.loader(dataset, train=False)
    ]


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """``images`` (N, C, H, W) in channels-last memory order (the values unchanged)."""
    return images.contiguous(memory_format=torch.channels_last)


def regroup(batches: Iterable[dict[str, torch.Tensor]], batch_size: int | None = None) -> list[dict[str, torch.Tensor]]:
    """The images and masks of evaluation ``batches`` as batches of one size each: every image
    cropped to its true size (:func:`~segnas.evaluation.size_groups`), the images of one size
    concatenated across ``batches`` in order and cut into batches of at most ``batch_size``
    (None: all of them), the images channels-last."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected a positive number of images")
    by_size: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for batch in batches:
        for images, targets in size_groups(batch):
            by_size.setdefault(tuple(images.shape[1:]), []).append((images, targets["mask"]))
    regrouped = []
    for parts in by_size.values():
        images = torch.cat([images for images, _ in parts])
        masks = torch.cat([masks for _, masks in parts])
        step = batch_size or images.shape[0]
        regrouped += [
            {"image": channels_last(images[i : i + step]), "mask": masks[i : i + step]}
            for i in range(0, images.shape[0], step)
        ]
    return regrouped


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
        with torch.inference_mode():  # in-place updates of the (ordinary) running statistics are allowed
            for x in images:
                if x.shape[0] >= 2:
                    net(x)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        net.eval()
    return net


def confusion(
    net: Callable[[torch.Tensor], Any],
    batches: Sequence[dict[str, torch.Tensor]],
    num_classes: int,
    ignore_index: int = 255,
    protocol: EvalProtocol | None = None,
) -> torch.Tensor:
    """The (num_classes, num_classes) confusion matrix of ``net`` over ``batches``, each image
    predicted by ``protocol`` (default: whole, full resolution). ``net``: a module (put in eval
    mode) or any callable on image batches (the int8 score's ONNX Runtime session).

    Never summed over DDP ranks: under DDP each rank scores different sub-networks. The matrix
    is kept where the batches are (the search device: torchmetrics does not move its states to
    the predictions, and a CPU matrix cannot add up CUDA counts).
    """
    protocol = protocol or EvalProtocol()
    device = batches[0]["image"].device if batches else torch.device("cpu")
    metric = SegmentationMetrics(num_classes, ignore_index, sync_on_compute=False).to(device)
    if isinstance(net, nn.Module):
        net.eval()
    with torch.inference_mode():
        for batch in batches:
            for logits, targets in protocol.outputs(net, batch):
                metric.update(logits, targets["mask"])
    return metric.compute()


class Scorer:
    """Scores networks on one fixed validation subset by ``protocol``, recalibrating on one fixed
    calibration subset (unpadded crops) first when ``recalibrate`` is true.

    ``batch_size``: at most this many validation images per forward, regrouped by size across the
    given batches (:func:`regroup`; None: all images of one size at once). The calibration batches
    are used as given.
    """

    def __init__(
        self,
        val_batches: Sequence[dict[str, torch.Tensor]],
        calib_batches: Sequence[dict[str, torch.Tensor]],
        num_classes: int,
        ignore_index: int = 255,
        recalibrate: bool = True,
        protocol: EvalProtocol | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.protocol = protocol or EvalProtocol()
        self.val_batches = regroup(val_batches, batch_size)
        self.calib_batches = [{**b, "image": channels_last(b["image"])} for b in calib_batches]
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.recalibrate = recalibrate
        self.images_per_score = sum(b["image"].shape[0] for b in self.val_batches) + (
            sum(b["image"].shape[0] for b in self.calib_batches) if recalibrate else 0
        )

    def prepare(self, net: nn.Module) -> nn.Module:
        """``net`` as it is scored: recalibrated (in place) when asked, in eval mode."""
        if self.recalibrate:
            recalibrate_bn(net, (b["image"] for b in self.calib_batches))
        return net.eval()

    def score(self, net: nn.Module) -> dict[str, float]:
        scores = scores_from_confusion(
            confusion(self.prepare(net), self.val_batches, self.num_classes, self.ignore_index, self.protocol)
        )
        return {"miou": scores["mIoU"], "pixel_acc": scores["pixel_acc"]}
