"""Lightning Trainer and module assembly from config, shared by every task that trains."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from torch import nn

from segnas import targets
from segnas.genotype import Genotype
from segnas.report.images import ValidationImages
from segnas.training.depth import DepthModule
from segnas.training.module import SegmentationModule


def build_module(
    cfg: DictConfig, genotype: Genotype, num_classes: int, net: nn.Module
) -> SegmentationModule | DepthModule:
    """The training module for ``task_type``: cross-entropy over ``num_classes`` classes, or
    depth regression (``num_classes`` is then the network's single output channel)."""
    train = cfg.train
    if targets.task_type(cfg) == targets.DEPTH:
        return DepthModule(
            net,
            optimizer=instantiate(train.optimizer),
            scheduler=train.scheduler,
            poly_power=train.poly_power,
            min_lr=train.min_lr,
            genotype=genotype.to_dict(),
            num_classes=num_classes,
        )
    return SegmentationModule(
        net,
        num_classes=num_classes,
        optimizer=instantiate(train.optimizer),
        scheduler=train.scheduler,
        poly_power=train.poly_power,
        min_lr=train.min_lr,
        ignore_index=int(cfg.data.get("ignore_index", 255)),
        genotype=genotype.to_dict(),
    )


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    logger: Logger | None,
    datamodule: pl.LightningDataModule,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> pl.Trainer:
    """``last.ckpt`` (for resume) and ``best.ckpt`` (by val mIoU, or val RMSE for depth) land
    directly in ``run_dir``.

    ``overrides`` replace ``trainer.*`` keys for phases that have their own length
    (``max_epochs=searcher.epochs``, ``limit_train_batches=...``).

    ``last.ckpt`` has its own callback because Lightning 2.6's ``save_last`` only rewrites it in
    epochs where the monitored metric improved, which leaves a stale file to resume from.
    """
    monitor, mode = targets.monitor(cfg)
    best = ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(dirpath=run_dir, filename="last", save_top_k=1, enable_version_counter=False)
    all_callbacks: list[Callback] = [best, last, ValidationImages(run_dir, datamodule, int(cfg.train.log_images)),
                                     *callbacks]
    if logger is not None:
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    return instantiate(
        cfg.trainer, logger=logger if logger is not None else False, callbacks=all_callbacks,
        default_root_dir=str(run_dir),
        **overrides,
    )
