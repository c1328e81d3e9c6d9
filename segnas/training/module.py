"""The LightningModule that trains any built segmentation network.

One module serves every place a network is trained: a fixed architecture (``task=train``), the
winner of a search, a knowledge-distillation teacher and FMAS's supernet. It owns the loss, the
optimiser and schedule built from config, and the validation confusion matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import Optimizer

from segnas.evaluation import EvalProtocol, score_segmentation
from segnas.metrics import SegmentationMetrics, scores_from_confusion
from segnas.training.schedules import build_schedule


class ScheduledModule(pl.LightningModule):
    """What every training module shares: the optimiser from a config partial over ``self.net``'s
    parameters and a per-step schedule from the ``scheduler``, ``poly_power`` and ``min_lr``
    hyper-parameters the subclass saved."""

    net: nn.Module
    optimizer_factory: Callable[[Iterable[nn.Parameter]], Optimizer]

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.net.parameters())
        schedule = build_schedule(
            optimizer,
            self.hparams.scheduler,
            self.trainer.estimated_stepping_batches,
            power=self.hparams.poly_power,
            min_lr=self.hparams.min_lr,
            warmup_steps=round(
                float(self.hparams.get("warmup_fraction", 0.0)) * self.trainer.estimated_stepping_batches
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class SegmentationModule(ScheduledModule):
    """Cross-entropy training (ignore 255) with a per-step poly / cosine / constant schedule.

    ``optimizer`` is a partial from config (``_partial_: true``) that receives the parameters.
    The genotype and class count are saved as hyper-parameters, so a checkpoint alone is enough
    to rebuild the network (``segnas.training.load_network``). Validation follows ``protocol``
    (default: whole images at full resolution against the original masks).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        scheduler: str = "poly",
        poly_power: float = 0.9,
        min_lr: float = 0.0,
        ignore_index: int = 255,
        warmup_fraction: float = 0.0,
        genotype: dict[str, Any] | None = None,
        protocol: EvalProtocol | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "protocol"])
        self.net = net
        self.optimizer_factory = optimizer
        self.protocol = protocol or EvalProtocol()
        self.criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index)
        #: The last validation's confusion matrix, summed over DDP ranks.
        self.last_confusion: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> None:
        """A network whose training follows the run's length (Auto-DeepLab's scheduled drop
        path) learns the step and the Trainer's total steps before each one, as the release
        reads TensorFlow's global step and ``training_number_of_steps``."""
        follow = getattr(self.net, "set_training_progress", None)
        if follow is not None:
            follow(self.global_step, self.trainer.estimated_stepping_batches)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[torch.Tensor]]:
        """Scores every image of ``batch`` by the protocol; returns each image's predicted
        classes (H, W) at its own size, in batch order (for :class:`ValidationImages`)."""
        loss, predictions = score_segmentation(
            self.protocol, self.net, batch, self.val_metrics, self.hparams.ignore_index
        )
        self.log("val/loss", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        return {"predictions": predictions}

    def on_validation_epoch_end(self) -> None:
        self.last_confusion = self.val_metrics.compute().cpu()
        self.val_metrics.reset()
        scores = scores_from_confusion(self.last_confusion)
        for name, value in scores.items():
            self.log(f"val/{name}", value, prog_bar=name == "mIoU")
