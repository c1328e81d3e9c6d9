"""Training one network with the shared module and Trainer, then scoring it on val: what
``task=train`` does once and ``task=search`` does for every candidate it retrains."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from segnas import targets
from segnas.genotype import Genotype
from segnas.hardware.onnx_export import export_onnx
from segnas.tasks.summary import costs, val_scores
from segnas.training.checkpoint import save_network
from segnas.training.trainer import build_module, build_trainer

log = logging.getLogger(__name__)


def weights(cfg: DictConfig) -> dict[str, Any]:
    """Where the backbone's initial weights come from: a build option, not part of the genotype."""
    return {"pretrained": bool(cfg.model.pretrained), "backbone_weights": cfg.model.backbone_weights}


def fit(
    cfg: DictConfig,
    out_dir: Path,
    genotype: Genotype,
    net: torch.nn.Module,
    datamodule: Any,
    logger: Any,
    checkpoint: Path | None,
    max_epochs: int | None = None,
    keep_best: bool = False,
) -> dict[str, Any] | None:
    """Train ``net`` into ``out_dir`` and score it on val; None on DDP ranks other than 0.

    ``keep_best`` (fine-tuning inherited weights): validate on the held-out train images
    (``datamodule.hold_out_train``) before and after every epoch, and end with the best of the
    weights before fine-tuning and after each epoch by that score, so fine-tuning never leaves a
    network below where it started on the split that selects."""
    outputs = targets.out_channels(cfg, datamodule.num_classes)
    module = build_module(cfg, genotype, outputs, net)
    # keep_best validates before fit: under inference mode the metrics' states would become
    # inference tensors that the fit's own validation then cannot update in place
    trainer = build_trainer(
        cfg,
        out_dir,
        logger,
        datamodule,
        net=net,
        **({"max_epochs": max_epochs} if max_epochs is not None else {}),
        **({"inference_mode": False} if keep_best else {}),
    )
    kept: dict[str, Any] = {}
    holdout = datamodule.loader(datamodule.holdout_dataset(), train=False) if datamodule.held_out else None
    if keep_best:
        key, mode = targets.monitor(cfg)
        before = float(trainer.validate(module, dataloaders=holdout, verbose=False)[0][key])
        start = copy.deepcopy(net.state_dict())
        trainer.fit(
            module,
            train_dataloaders=datamodule.train_dataloader(),
            val_dataloaders=holdout,
            ckpt_path=str(checkpoint) if checkpoint else None,
        )
        kept = _keep_best(trainer, module, holdout, out_dir / "best.ckpt", key, mode, before, start)
    else:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
    scores = val_scores(
        trainer.validate(module, datamodule=datamodule, verbose=False)[0], module, datamodule.class_names
    )
    if holdout is not None:  # the images model selection reads (train the network never saw), scored as val
        held = trainer.validate(module, dataloaders=holdout, verbose=False)[0]
        scores.update(val_scores(held, module, datamodule.class_names, prefix="holdout"))
    if not trainer.is_global_zero:
        return None
    epochs, steps = _progress(trainer, out_dir)
    crop = (cfg.data.crop_size, cfg.data.crop_size)
    return {
        "task_type": targets.task_type(cfg),
        **scores,
        "val_protocol": module.protocol.describe(),
        **costs(cfg, net, crop),
        "epochs": epochs,
        "steps": steps,
        "images_seen": steps * cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        **kept,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "checkpoint": str(out_dir / "last.ckpt"),
        "model": str(save_network(out_dir / "model.pt", genotype, outputs, net.cpu())),
        **onnx(net, out_dir / "model.onnx", crop),
    }


def _keep_best(
    trainer: pl.Trainer,
    module: pl.LightningModule,
    holdout: Any,
    best: Path,
    key: str,
    mode: str,
    before: float,
    start: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Load into ``module`` the better of ``best`` (the epoch the checkpoint callback kept by the
    held-out score) and the weights before fine-tuning (``start``, scoring ``before``)."""
    after = None
    if best.is_file():
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
        after = float(trainer.validate(module, dataloaders=holdout, verbose=False)[0][key])
    improved = after is not None and (after > before if mode == "max" else after < before)
    if not improved:
        module.net.load_state_dict(start)
    name = key.split("/")[-1]
    log.info(
        "fine-tuning kept %s: held-out %s %.4f before, %s after its best epoch",
        "that epoch" if improved else "the weights before fine-tuning",
        name,
        before,
        "none" if after is None else f"{after:.4f}",
    )
    return {
        f"holdout_{name}_before_finetune": before,
        f"holdout_{name}_best_epoch": after,
        "finetune_kept": "best epoch" if improved else "weights before fine-tuning",
    }


def onnx(net: torch.nn.Module, path: Path, input_size: tuple[int, int]) -> dict[str, Any]:
    """``{"onnx": path}``, or the reason it was skipped when the ONNX extras are missing."""
    try:
        return {"onnx": str(export_onnx(net.cpu(), path, tuple(input_size)))}
    except ImportError as err:
        log.warning("ONNX export skipped: %s", err)
        return {"onnx": None, "onnx_skipped": str(err)}


def _progress(trainer: pl.Trainer, run_dir: Path) -> tuple[int, int]:
    """Epochs and optimiser steps done; under ddp_spawn they live in the children, so the
    checkpoint they wrote is the record."""
    if trainer.global_step == 0 and (run_dir / "last.ckpt").is_file():
        state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
        return int(state["epoch"]), int(state["global_step"])
    return trainer.current_epoch, trainer.global_step
