"""Random search over the Auto-DeepLab space at the Auto-DeepLab search's budget.

The supernet search takes ``epochs × batches`` weight steps plus ``(epochs − warmup) × batches``
architecture steps; random search spends the same number of training steps (at the same batch
size, so the same images) on ``searcher.samples`` architectures drawn uniformly, each trained
from scratch for an equal share with the retraining optimiser and schedule (``train.*``), then
scored on the same validation images the supernet search scores itself on. The best
``searcher.top_k`` by that mIoU go back to the pipeline, which retrains them from scratch exactly
as it retrains Auto-DeepLab's decoded network.

State (every result so far and the sampler's generator) is saved after each architecture, so a
resumed run draws the same next architecture.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segnas.errors import ConfigError
from segnas.evaluation import EvalProtocol, eval_protocol
from segnas.genotype import Genotype
from segnas.hardware import count_params
from segnas.metrics import SegmentationMetrics, scores_from_confusion
from segnas.report.loggers import is_wandb
from segnas.report.run_dir import load_state, save_state, write_atomic
from segnas.searchers.budget import Budget
from segnas.searchers.distributed import search_device
from segnas.searchers.result import Candidate, SearchResult
from segnas.spaces.autodeeplab import AutoDeepLabSpace
from segnas.training.schedules import build_schedule

log = logging.getLogger(__name__)
FORMAT = "segnas-random-autodeeplab/1"
COLUMNS = ("sample", "genotype_hash", "path", "cell", "params", "steps", "train_loss", "val_mIoU", "seconds")
SPACE = AutoDeepLabSpace()


def matched_steps(settings: DictConfig, batches_per_epoch: int) -> int:
    """Training steps of the Auto-DeepLab search with these settings (weight + architecture)."""
    epochs, warmup = int(settings.epochs), int(settings.warmup_epochs)
    return (epochs + epochs - warmup) * batches_per_epoch


def search(cfg: DictConfig, random_settings: DictConfig, run_dir: Path, resume: Path | None, logger: Any
           ) -> SearchResult:
    """``cfg.searcher``: the Auto-DeepLab searcher's settings; ``random_settings``: samples, top_k."""
    start = time.perf_counter()
    settings = cfg.searcher
    samples, top_k = int(random_settings.samples), int(random_settings.top_k)  # checked with the config
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    half = len(datamodule.train_halves()[0]) // datamodule.batch_size
    batches = min(int(settings.batches_per_epoch), half) if settings.batches_per_epoch else half
    budget = Budget.from_config(cfg)
    steps_total = matched_steps(settings, batches)
    if budget.images is not None:
        steps_total = min(steps_total, budget.images // datamodule.batch_size)
    steps = steps_total // samples
    if steps < 1:
        raise ConfigError(f"searcher.samples={samples} architectures share {steps_total} training steps: "
                          "fewer samples or a larger budget")
    device = search_device("auto")
    protocol = eval_protocol(cfg)
    train_loader = datamodule.loader(datamodule.dataset("train"), train=True)
    val_loader = datamodule.loader(datamodule.val_subset(settings.val_images) if settings.val_images
                                   else datamodule.eval_dataset("val"), train=False)
    labels = OmegaConf.to_container(settings.network, resolve=True)
    rng = np.random.default_rng(int(cfg.seed))
    history: list[dict[str, Any]] = []
    spent = 0.0
    if resume is not None:
        state = load_state(resume, FORMAT, "searcher=random searcher.space=autodeeplab")
        rng.bit_generator.state, history, spent = state["rng"], state["history"], float(state["wall_time_s"])
        log.info("resumed random search after %d architectures", len(history))
    stopped = None
    for index in range(len(history), samples):
        stopped = budget.exhausted(spent + time.perf_counter() - start, sum(r["steps"] for r in history)
                                   * datamodule.batch_size) if history else None
        if stopped:
            log.info("stopping random search after %d architectures: %s", index, stopped)
            break
        tick = time.perf_counter()
        genotype = SPACE.sample(rng, int(settings.blocks), int(settings.layers), **labels)
        torch.manual_seed(int(cfg.seed) * 1000 + index)
        net = SPACE.build(genotype, datamodule.num_classes).to(device)
        loss = _train(net, train_loader, steps, cfg, datamodule.ignore_index, device)
        miou = _score(net, val_loader, datamodule.num_classes, datamodule.ignore_index, device, protocol)
        record = {"sample": index, "genotype_hash": genotype.hash, "genotype": genotype.to_dict(),
                  "path": " ".join(map(str, genotype.arch["path"])), "cell": _describe(genotype.arch["cell"]),
                  "params": count_params(net), "steps": steps, "train_loss": round(loss, 4),
                  "val_mIoU": round(miou, 4), "seconds": round(time.perf_counter() - tick, 2)}
        history.append(record)
        _write_csv(run_dir / "search.csv", history)
        save_state(run_dir / "last.ckpt", FORMAT, {"rng": rng.bit_generator.state, "history": history,
                                                   "wall_time_s": spent + time.perf_counter() - start})
        if logger is not None:
            logger.log_metrics({"search/val_mIoU": miou, "search/train_loss": loss, "search/params": record["params"]},
                               step=index)
        log.info("random architecture %d: val mIoU %.4f after %d steps (%s)", index, miou, steps, record["path"])
    if is_wandb(logger):
        logger.log_table("search/architectures", columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in history])
    best = sorted(history, key=lambda r: -r["val_mIoU"])[:top_k]
    done = sum(r["steps"] for r in history)
    return SearchResult(
        [Candidate(Genotype.from_dict(r["genotype"]), scores={"val_mIoU": r["val_mIoU"], "sample": r["sample"]})
         for r in best],
        summary={
            "search_wall_time_s": round(spent + time.perf_counter() - start, 2),
            "search_steps": done,
            "search_images_seen": done * datamodule.batch_size,
            "search_samples": len(history),
            "search_steps_per_sample": steps,
            "search_matched_steps": matched_steps(settings, batches),
            "search_best_val_mIoU": best[0]["val_mIoU"],
            "search_val_protocol": protocol.describe(),
            **budget.summary(stopped),
        })


def _train(net: nn.Module, loader, steps: int, cfg: DictConfig, ignore_index: int, device: torch.device) -> float:
    """``steps`` optimiser steps with the retraining optimiser and schedule; the mean loss of the
    last quarter of them."""
    optimizer = instantiate(cfg.train.optimizer)(net.parameters())
    schedule = build_schedule(optimizer, str(cfg.train.scheduler), steps, power=float(cfg.train.poly_power),
                              min_lr=float(cfg.train.min_lr))
    criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
    net.train()
    losses = []
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    for batch in itertools.islice(batches, steps):
        loss = criterion(net(batch["image"].to(device)), batch["mask"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 4):]
    return sum(tail) / len(tail)


@torch.no_grad()
def _score(net: nn.Module, loader, num_classes: int, ignore_index: int, device: torch.device,
           protocol: EvalProtocol) -> float:
    metrics = SegmentationMetrics(num_classes, ignore_index, sync_on_compute=False).to(device)
    net.eval()
    for batch in loader:
        batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        for logits, targets in protocol.outputs(net, batch):
            metrics.update(logits, targets["mask"])
    return scores_from_confusion(metrics.compute().cpu())["mIoU"]


def _describe(cell: list) -> str:
    return "; ".join(" + ".join(f"{op}({state})" for op, state in block) for block in cell)


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, buffer.getvalue())
