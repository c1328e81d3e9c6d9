"""Lightning Trainer and module assembly from config, shared by every task that trains."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from torch import nn

from segnas import targets
from segnas.evaluation import eval_protocol
from segnas.genotype import Genotype
from segnas.report.images import ValidationImages
from segnas.training.depth import DepthModule
from segnas.training.epoch_log import EpochLog, live_progress_bar
from segnas.training.layer_sync import TimmSyncBatchNorm
from segnas.training.module import SegmentationModule

log = logging.getLogger(__name__)


def build_module(
    cfg: DictConfig, genotype: Genotype, num_classes: int, net: nn.Module
) -> SegmentationModule | DepthModule:
    """The training module for ``task_type``: cross-entropy over ``num_classes`` classes, or
    depth regression (``num_classes`` is then the network's single output channel); both
    validate by the ``eval.*`` protocol."""
    train = cfg.train
    if targets.task_type(cfg) == targets.DEPTH:
        return DepthModule(
            net,
            optimizer=instantiate(train.optimizer),
            scheduler=str(train.scheduler),
            poly_power=train.poly_power,
            min_lr=train.min_lr,
            warmup_fraction=float(train.get("warmup_fraction", 0.0)),
            genotype=genotype.to_dict(),
            num_classes=num_classes,
            protocol=eval_protocol(cfg),
        )
    return SegmentationModule(
        net,
        num_classes=num_classes,
        optimizer=instantiate(train.optimizer),
        scheduler=str(train.scheduler),
        poly_power=train.poly_power,
        min_lr=train.min_lr,
        warmup_fraction=float(train.get("warmup_fraction", 0.0)),
        ignore_index=int(cfg.data.get("ignore_index", 255)),
        genotype=genotype.to_dict(),
        protocol=eval_protocol(cfg),
    )


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    logger: Logger | None,
    datamodule: pl.LightningDataModule | None,
    callbacks: Sequence[Callback] = (),
    net: nn.Module | None = None,
    selection: bool = True,
    **overrides: Any,
) -> pl.Trainer:
    """``last.ckpt`` (for resume) and ``best.ckpt`` (by val mIoU, or val RMSE for depth) land
    directly in ``run_dir``.

    ``overrides`` replace ``trainer.*`` keys for phases that have their own length
    (``max_epochs=searcher.epochs``, ``limit_train_batches=...``).

    ``last.ckpt`` has its own callback because Lightning 2.6's ``save_last`` only rewrites it in
    epochs where the monitored metric improved, which leaves a stale file to resume from.

    ``net``: the network to be trained; under a DDP strategy one with dead parameters switches the
    strategy to find them (see :func:`ddp_strategy`). ``selection=False`` (a search module, which
    validates nothing and checkpoints each unit itself, :mod:`segnas.searchers.engine`) leaves out
    both checkpoints and the validation images; ``datamodule`` may then be None.

    Every Trainer logs one line per epoch (:class:`EpochLog`) and draws the live progress bar only
    on a terminal unless ``trainer.enable_progress_bar`` says otherwise.

    ``trainer.sync_batchnorm=true`` synchronises BatchNorm through :class:`TimmSyncBatchNorm`
    instead of Lightning's own conversion, which silently drops every timm activation.
    """
    all_callbacks: list[Callback] = [EpochLog(Path(str(cfg.run_dir)) / "run.log"), *callbacks]
    if selection:
        monitor, mode = targets.monitor(cfg)
        all_callbacks += [
            ModelCheckpoint(
                dirpath=run_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1, enable_version_counter=False
            ),
            ModelCheckpoint(dirpath=run_dir, filename="last", save_top_k=1, enable_version_counter=False),
            ValidationImages(run_dir, datamodule, int(cfg.train.log_images)),
        ]
    if logger is not None:
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    if net is not None and "strategy" not in overrides:
        overrides.update(ddp_strategy(cfg, net))
    overrides.setdefault("enable_progress_bar", live_progress_bar(cfg.trainer.get("enable_progress_bar")))
    if overrides.get("sync_batchnorm", cfg.trainer.get("sync_batchnorm", False)):
        overrides.update(sync_batchnorm=False, plugins=[TimmSyncBatchNorm()])  # Lightning refuses both
    return instantiate(
        cfg.trainer,
        logger=logger if logger is not None else False,
        callbacks=all_callbacks,
        default_root_dir=str(run_dir),
        **overrides,
    )


def dead_parameters(net: nn.Module, size: int = 64) -> list[str]:
    """Names of ``net``'s parameters that its output does not depend on, from one eval-mode
    forward and backward pass on a ``size``² input (BatchNorm statistics untouched). An auxcell
    decoder leaves the projection of every encoder map no block takes, and the encoder's last
    stage when no block takes the stride-32 map."""
    training = net.training
    net.eval()
    try:
        output = net(torch.zeros(1, 3, size, size, device=next(net.parameters()).device))
        (output[0] if isinstance(output, tuple | list) else output).float().sum().backward()
        dead = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        net.zero_grad(set_to_none=True)
        net.train(training)
    return dead


def ddp_strategy(cfg: DictConfig, net: nn.Module) -> dict[str, str]:
    """``{"strategy": <name>_find_unused_parameters_true}`` when ``trainer.strategy`` is a DDP
    strategy and ``net`` has dead parameters (DDP otherwise stops at the first step, waiting for
    gradients that never come); ``{}`` when nothing needs to change. Finding them costs a graph
    traversal per step, so networks without dead parameters keep the plain strategy."""
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if strategy not in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        return {}
    dead = dead_parameters(net)
    if not dead:
        return {}
    log.info(
        "%d parameter tensors of the network never reach its output (e.g. %s): trainer.strategy=%s "
        "becomes %s_find_unused_parameters_true",
        len(dead),
        dead[0],
        strategy,
        strategy,
    )
    return {"strategy": f"{strategy}_find_unused_parameters_true"}
