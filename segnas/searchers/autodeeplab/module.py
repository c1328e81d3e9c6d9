"""Auto-DeepLab's bilevel search as a LightningModule with manual optimisation.

Each training step takes one batch of trainA and one of trainB (paper, Sec. 4.1): a weight step
on trainA (SGD on the supernet's weights only), then, once ``warmup_epochs`` have passed, a
first-order architecture step on trainB (Adam on α and β only).

The architecture gradient is taken with ``torch.autograd.grad`` on α and β alone: the weights'
gradients are never computed for it (a third less backward work), and it stays outside DDP's
gradient reducer, so under DDP it is averaged over ranks explicitly. α and β start equal on every
rank (DDP broadcasts parameters at wrap time) and receive equal updates, so they stay identical.

The module is a :class:`~segnas.searchers.engine.SearchProgress` like every search module, fitted
by the engine (:func:`~segnas.searchers.engine.fit_search`, one epoch per unit): it counts its
weight and architecture steps and the images they used from the epoch and batch index (so a
resumed search counts the steps before the interruption), the engine's
:class:`~segnas.searchers.engine.SearchBudget` callback stops ``fit`` on them, and the counts and
the seconds spent travel in the checkpoint (resuming a search that had already finished runs no
batch, and its summary still reports them).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from torch import nn
from torch.optim import Optimizer

from segnas.evaluation import EvalProtocol, score_segmentation
from segnas.metrics import SegmentationMetrics, scores_from_confusion
from segnas.searchers.autodeeplab.settings import AutoDeepLabSettings
from segnas.searchers.engine import SearchProgress
from segnas.settings.run import Schedule
from segnas.spaces.autodeeplab.decode import (
    decode_cell,
    normalise_beta,
    path_strides,
    viterbi,
)
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet
from segnas.training.schedules import build_schedule


class AutoDeepLabSearchModule(SearchProgress, pl.LightningModule):
    """The supernet ``settings`` describe (its sizes, memory options), trained for
    ``settings.epochs`` with ``settings``' optimisers and schedule."""

    def __init__(
        self,
        settings: AutoDeepLabSettings,
        num_classes: int,
        ignore_index: int = 255,
        protocol: EvalProtocol | None = None,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        self.start_clock(started_at)
        self.weight_steps = self.arch_steps = 0
        self.automatic_optimization = False
        self.settings = settings
        self.units = settings.epochs
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "weight_min_lr": settings.weight_min_lr,
                "warmup_epochs": settings.warmup_epochs,
                "ignore_index": ignore_index,
                "channels_last": settings.channels_last,
            }
        )
        self.protocol = protocol or EvalProtocol()
        self.supernet = AutoDeepLabSupernet(
            num_classes,
            settings.layers,
            settings.filter_multiplier,
            settings.blocks,
            aspp_channels=settings.aspp_channels,
            recompute=settings.recompute,
            checkpoint_cells=settings.checkpoint_cells,
            partial_channels=settings.partial_channels,
        )
        self.ignore_index = ignore_index
        self.criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index)
        self.channels_last = settings.channels_last
        if self.channels_last:
            self.supernet.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.supernet(images)

    @property
    def searching_architecture(self) -> bool:
        return self.current_epoch >= self.settings.warmup_epochs

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        weight_opt, arch_opt = self.optimizers()
        weight_schedule = self.lr_schedulers()
        part_a, part_b = batch["a"], batch["b"]

        loss_w = self.criterion(self(part_a["image"]), part_a["mask"])
        weight_opt.zero_grad()
        self.manual_backward(loss_w)
        for parameter in self.supernet.arch_parameters():
            parameter.grad = None  # the weight step must not move α / β
        weight_opt.step()
        weight_schedule.step()
        size = part_a["image"].shape[0]
        self.log("search/weight_loss", loss_w, prog_bar=True, batch_size=size)

        if self.searching_architecture:
            loss_a = self.criterion(self(part_b["image"]), part_b["mask"])
            arch = self.supernet.arch_parameters()
            grads = torch.autograd.grad(loss_a, arch)
            if dist.is_available() and dist.is_initialized():
                for grad in grads:
                    dist.all_reduce(grad)
                    grad.div_(dist.get_world_size())
            for parameter, grad in zip(arch, grads):
                parameter.grad = grad
            arch_opt.step()
            arch_opt.zero_grad()
            self.log("search/arch_loss", loss_a, prog_bar=True, batch_size=size)
        self._count(batch_idx + 1, size)

    def _count(self, done_in_epoch: int, batch_size: int) -> None:
        """Steps and images so far, from the epoch and the batches done in it (all ranks')."""
        batches, epoch, warmup = self.trainer.num_training_batches, self.current_epoch, self.settings.warmup_epochs
        self.weight_steps = epoch * batches + done_in_epoch
        self.arch_steps = max(0, epoch - warmup) * batches + (done_in_epoch if epoch >= warmup else 0)
        self.images_seen = (self.weight_steps + self.arch_steps) * batch_size * self.trainer.world_size

    def search_state(self) -> dict[str, int]:
        """The step counts (``fit`` restores the weights, α, β and the optimisers)."""
        return {"weight_steps": self.weight_steps, "arch_steps": self.arch_steps}

    def load_search_state(self, state: dict[str, int]) -> None:
        self.weight_steps, self.arch_steps = state["weight_steps"], state["arch_steps"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[torch.Tensor]]:
        """The supernet's score by the evaluation protocol; per-image predicted classes for the
        images callback."""
        loss, predictions = score_segmentation(self.protocol, self, batch, self.val_metrics, self.ignore_index)
        self.log("val/loss", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        return {"predictions": predictions}

    def on_validation_epoch_end(self) -> None:
        scores = scores_from_confusion(self.val_metrics.compute().cpu())
        self.val_metrics.reset()
        for name, value in scores.items():
            self.log(f"val/{name}", value, prog_bar=name == "mIoU")
        if not self.trainer.sanity_checking:  # the supernet's score after each epoch: its anytime curve
            self.record_progress(self.current_epoch, float(scores["mIoU"]))

    def decoded(self) -> dict[str, Any]:
        """The current discrete architecture: greedy cell, Viterbi path."""
        return {
            "cell": decode_cell(self.supernet.alpha, self.supernet.blocks),
            "path": path_strides(viterbi(normalise_beta(self.supernet.beta.detach().cpu()))),
        }

    def configure_optimizers(self) -> tuple[list[Optimizer], list[dict[str, Any]]]:
        weight_opt = instantiate(self.settings.weight_optimizer)(self.supernet.weight_parameters())
        arch_opt = instantiate(self.settings.arch_optimizer)(self.supernet.arch_parameters())
        total = self.trainer.estimated_stepping_batches
        schedule = build_schedule(weight_opt, Schedule.cosine, total, min_lr=self.settings.weight_min_lr)
        return [weight_opt, arch_opt], [{"scheduler": schedule, "interval": "step"}]
