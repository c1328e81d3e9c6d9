"""Depth regression (``task_type=depth``): the berHu loss and the LightningModule that trains a
one-channel network with it.

Loss choice. The networks regress depth in metres with the reverse Huber ("berHu") loss of
Laina et al. (3DV 2016) over the valid pixels: |r| for residuals up to c = 0.2 × the batch's
largest |r|, (r² + c²) / 2c beyond. The L2 branch weighs the large residuals that dominate
RMSE (the score that picks the best network and half of the search reward), while the L1
branch keeps a useful gradient on the many small residuals, where a plain L2 loss fades and δ1
is decided. A scale-invariant log loss (Eigen et al., 2014) was not chosen: it forgives part of
a global scale error (all of it at λ = 1), which RMSE and δ1 both count in full.

Output initialisation. A zero-initialised output layer starts every pixel at 0 m while targets
average metres to tens of metres; with Adam's step size bounded by the learning rate, short
trainings (a search child's few dozen steps) spend themselves climbing to that scale, and their
scores then rank how fast a decoder climbs, not what it learnt about the scene. So the output
layers' bias starts at the mean training depth, as a classifier's bias may start at the class
prior (:func:`init_depth_output`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from segnas.evaluation import EvalProtocol
from segnas.metrics import DepthMetrics
from segnas.training.module import ScheduledModule

log = logging.getLogger(__name__)
#: berHu's threshold as a fraction of the batch's largest absolute residual (Laina et al.).
BERHU_FRACTION = 0.2


def berhu_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean berHu loss over valid pixels (``valid`` defaults to target > 0, the transforms'
    mark of a known depth); 0, still attached to the graph, when no pixel is valid."""
    if pred.shape != target.shape:
        raise ValueError(f"depth predictions {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape")
    valid = target > 0 if valid is None else valid.bool()
    residual = (pred - target)[valid].abs()
    if residual.numel() == 0:
        return pred.sum() * 0.0
    c = (BERHU_FRACTION * residual.max()).detach().clamp(min=1e-6)
    return torch.where(residual <= c, residual, (residual**2 + c**2) / (2 * c)).mean()


def mean_depth(batches: Iterable[dict[str, Any]], limit: int) -> float:
    """Mean valid depth (``depth`` > 0) over the first ``limit`` batches."""
    total, count = 0.0, 0
    for index, batch in enumerate(batches):
        if index >= limit:
            break
        depth = batch["depth"]
        valid = depth > 0
        total, count = total + float(depth[valid].double().sum()), count + int(valid.sum())
    if count == 0:
        raise ValueError("no valid depth pixel in the batches used to initialise the depth output")
    return total / count


@torch.no_grad()
def init_depth_output(net: nn.Module, depth: float) -> int:
    """Set the bias of every one-channel output convolution of ``net`` (the main head and any
    auxiliary heads: no other layer of a segnas network has one output channel) to ``depth``;
    returns how many were set."""
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1 and m.bias is not None]
    for layer in layers:
        layer.bias.fill_(float(depth))
    return len(layers)


class DepthModule(ScheduledModule):
    """Trains a network whose single output channel is depth in metres.

    Validation logs ``val/RMSE``, ``val/REL`` and ``val/delta1`` over every valid pixel of the
    split, predicted by ``protocol`` (default: whole images at full resolution). ``num_classes``
    (the output channels, always 1) is saved under that name because it is what
    ``segnas.training.load_network`` rebuilds a network from. A fit that does not resume
    first sets the output bias to the mean depth of ``init_batches`` training batches (0: off).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: str = "poly",
        poly_power: float = 0.9,
        min_lr: float = 0.0,
        warmup_fraction: float = 0.0,
        genotype: dict[str, Any] | None = None,
        num_classes: int = 1,
        init_batches: int = 8,
        protocol: EvalProtocol | None = None,
    ) -> None:
        super().__init__()
        if num_classes != 1:
            raise ValueError(f"a depth network has one output channel, got num_classes={num_classes}")
        self.save_hyperparameters(ignore=["net", "optimizer", "protocol"])
        self.net = net
        self.optimizer_factory = optimizer
        self.protocol = protocol or EvalProtocol()
        self.val_metrics = DepthMetrics()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        if self.hparams.init_batches <= 0 or self.trainer.ckpt_path is not None or datamodule is None:
            return
        depth = mean_depth(datamodule.train_dataloader(), self.hparams.init_batches)
        layers = init_depth_output(self.net, depth)
        log.info("depth output bias set to the mean training depth %.3f m (%d layer(s))", depth, layers)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = berhu_loss(self(batch["image"]), batch["depth"], batch["depth_valid"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[torch.Tensor]]:
        """Scores every image by the protocol; returns each image's depth (1, H, W) at its size.
        ``val/loss`` is the berHu loss of each size group, weighted by its valid pixels."""
        predictions: list[torch.Tensor] = [torch.empty(0)] * batch["image"].shape[0]
        loss = torch.zeros((), device=self.device)
        pixels = 0
        for depth, targets in self.protocol.outputs(self.net, batch):
            depth = depth.float()
            self.val_metrics.update(depth, targets["depth"], targets["depth_valid"])
            valid = int(targets["depth_valid"].sum())
            loss = loss + berhu_loss(depth, targets["depth"], targets["depth_valid"]) * valid
            pixels += valid
            for index, predicted in zip(targets["index"].tolist(), depth):
                predictions[index] = predicted
        self.log("val/loss", loss / max(pixels, 1), sync_dist=True, batch_size=batch["image"].shape[0])
        return {"predictions": predictions}

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        for name, value in scores.items():
            self.log(f"val/{name}", value, prog_bar=name == "RMSE")
