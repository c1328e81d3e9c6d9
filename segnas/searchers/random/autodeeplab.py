"""Random search over the Auto-DeepLab space at the Auto-DeepLab search's budget.

The supernet search takes ``epochs × batches`` weight steps plus ``(epochs − warmup) × batches``
architecture steps; random search spends the same number of training steps (at the same batch
size, so the same images) on ``searcher.samples`` architectures drawn uniformly, each trained
from scratch for an equal share with the retraining optimiser and schedule (``train.*``) on
trainA, the half the supernet's weight steps use, then scored on trainB, the half its
architecture steps use: ``searcher.autodeeplab.val_images`` of trainB's images (all with null),
whole, by the evaluation protocol. Selection never looks at val, the split the final result is
reported on, just as Auto-DeepLab's never does (issue 13, item 7; the baseline once picked its
top-k on val, which favoured it). The best ``searcher.top_k`` by that held-out mIoU go back to the pipeline,
which retrains them from scratch exactly as it retrains Auto-DeepLab's decoded network.

The search is :class:`RandomAutoDeepLabModule` under one ``Trainer.fit``
(:mod:`segnas.searchers.engine`): one unit is one architecture per rank, drawn in sample order
from one generator on every rank, each rank training its own; the generator and every result so
far travel in the checkpoint, so a resumed run draws the same next architecture.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import re
import time
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from segnas.data.epoch_seeded import at_epoch, epoch_seeded_loader
from segnas.errors import ConfigError
from segnas.evaluation import EvalProtocol
from segnas.genotype import Genotype
from segnas.hardware import count_params
from segnas.metrics import SegmentationMetrics, scores_from_confusion
from segnas.report.loggers import is_wandb
from segnas.searchers.autodeeplab.settings import AutoDeepLabSettings
from segnas.searchers.contract import SearchContext
from segnas.searchers.distributed import all_gather, rank_and_world
from segnas.searchers.engine import SearchModule, fit_search
from segnas.searchers.result import Candidate, SearchResult
from segnas.settings.run import TrainSettings
from segnas.spaces.autodeeplab import AutoDeepLabSpace
from segnas.training.schedules import build_schedule

log = logging.getLogger(__name__)
COLUMNS = ("sample", "genotype_hash", "path", "cell", "params", "steps", "train_loss", "holdout_mIoU", "seconds")
SPACE = AutoDeepLabSpace()


def matched_steps(settings: AutoDeepLabSettings, batches_per_epoch: int) -> int:
    """Training steps of the Auto-DeepLab search with these settings (weight + architecture)."""
    return (settings.epochs + settings.epochs - settings.warmup_epochs) * batches_per_epoch


def search(
    settings: AutoDeepLabSettings, context: SearchContext, samples: int, top_k: int, steps: int | None = None
) -> SearchResult:
    """``samples`` architectures of the space ``settings`` search, the best ``top_k`` by held-out
    mIoU returned. ``steps``: training steps of every architecture (a benchmark table's fixed
    fidelity) instead of an equal share of the supernet search's."""
    started = time.monotonic()
    datamodule, budget, logger = context.datamodule, context.budget, context.logger
    datamodule.setup("fit")
    half = len(datamodule.train_halves()[0]) // datamodule.batch_size
    batches = min(settings.batches_per_epoch, half) if settings.batches_per_epoch else half
    steps_total = matched_steps(settings, batches)
    if budget.images is not None:
        steps_total = min(steps_total, budget.images // datamodule.batch_size)
    if steps is None:
        steps = steps_total // samples
    if steps < 1:
        raise ConfigError(
            f"searcher.samples={samples} architectures share {steps_total} training steps: "
            "fewer samples or a larger budget"
        )
    trainer, module = fit_search(
        context,
        lambda world: RandomAutoDeepLabModule(
            settings, context.train, context.seed, datamodule, context.protocol, samples, steps, world, started
        ),
    )
    history = module.history
    if is_wandb(logger) and trainer.is_global_zero:
        logger.log_table("search/architectures", columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in history])
    best = sorted(history, key=lambda r: -r["holdout_mIoU"])[:top_k]
    done = sum(r["steps"] for r in history)
    return SearchResult(
        [
            Candidate(
                Genotype.from_dict(r["genotype"]), scores={"holdout_mIoU": r["holdout_mIoU"], "sample": r["sample"]}
            )
            for r in best
        ],
        summary={
            "search_wall_time_s": round(module.wall_time_s, 2),
            "search_steps": done,
            "search_images_seen": done * datamodule.batch_size,
            "search_samples": len(history),
            "search_steps_per_sample": steps,
            "search_matched_steps": matched_steps(settings, batches),
            "search_best_holdout_mIoU": best[0]["holdout_mIoU"],
            "search_selection_split": "trainB (the half of train Auto-DeepLab's architecture steps use), never val",
            "search_val_protocol": context.protocol.describe(),
            "search_ranks": trainer.world_size,
            **budget.summary(module.budget_stopped),
        },
    )


class RandomAutoDeepLabModule(SearchModule):
    """``samples`` architectures of the space ``settings`` search, in units of one per rank, each
    trained for ``steps`` steps with ``train``'s optimiser and schedule and scored by
    ``protocol``; the networks are built and trained inside the unit, never registered here.
    ``seed`` seeds the draws, each architecture's initial weights and its batches."""

    unit_name = "architecture"

    def __init__(
        self,
        settings: AutoDeepLabSettings,
        train: TrainSettings,
        seed: int,
        datamodule: Any,
        protocol: EvalProtocol,
        samples: int,
        steps: int,
        world: int,
        started_at: float | None = None,
    ) -> None:
        super().__init__(units=math.ceil(samples / world))
        self.start_clock(started_at)
        self.settings, self.train_settings, self.seed, self.datamodule = settings, train, seed, datamodule
        self.protocol, self.samples, self.steps = protocol, samples, steps
        self.labels = dataclasses.asdict(settings.network)
        self.rng = np.random.default_rng(seed)
        self.history: list[dict[str, Any]] = []
        self.loaders: tuple[Any, Any] | None = None

    def search_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "history": self.history}

    def load_search_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state, self.history = state["rng"], list(state["history"])

    def replicated_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "samples": [r["genotype_hash"] for r in self.history]}

    def record_files(self) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
        return {"search.csv": (COLUMNS, self.history)}

    def best_score(self) -> float | None:
        """The best held-out (trainB) mIoU of the architectures sampled so far."""
        return max((r["holdout_mIoU"] for r in self.history), default=None)

    def unit_line(self) -> str:
        best = max(r["holdout_mIoU"] for r in self.history)
        return (
            f"architecture unit {self.current_epoch + 1}/{self.units}: {len(self.history)}/{self.samples} "
            f"sampled, best held-out mIoU {best:.4f}, {self.wall_time_s:.1f} s"
        )

    def setup(self, stage: str) -> None:
        datamodule = self.datamodule
        self.device_used = self.trainer.strategy.root_device
        train, _ = datamodule.train_halves()  # trainA: what the supernet's weight steps train on
        if len(train) < datamodule.batch_size:
            datamodule.loader(train, train=True)  # raises the datamodule's own clear error
        held_out = datamodule.train_half_b_indices()  # trainB, scored whole as val would be
        if self.settings.val_images:
            held_out = held_out[: self.settings.val_images]
        self.loaders = (train, datamodule.loader(datamodule.eval_dataset("train", held_out), train=False))

    def run_unit(self, index: int) -> None:
        assert self.loaders is not None
        rank, world = rank_and_world()
        settings, datamodule = self.settings, self.datamodule
        first = len(self.history)
        drawn = [
            (first + k, SPACE.sample(self.rng, settings.blocks, settings.layers, **self.labels))
            for k in range(min(world, self.samples - first))
        ]
        mine = []
        for sample, genotype in drawn[rank::world]:
            tick = time.perf_counter()
            torch.manual_seed(self.seed * 1000 + sample)
            net = SPACE.build(genotype, datamodule.num_classes).to(self.device_used)
            # the sample's batches depend on its index alone, whichever rank trains it
            batches = epoch_seeded_loader(
                self.loaders[0], self.seed * 1000 + sample, datamodule.batch_size, datamodule.num_workers
            )
            loss = _train(net, batches, self.steps, self.train_settings, datamodule.ignore_index, self.device_used)
            miou = _score(
                net, self.loaders[1], datamodule.num_classes, datamodule.ignore_index, self.device_used, self.protocol
            )
            mine.append(
                {
                    "sample": sample,
                    "genotype_hash": genotype.hash,
                    "genotype": genotype.to_dict(),
                    "path": " ".join(map(str, genotype.arch["path"])),
                    "cell": describe_cell(genotype.arch["cell"]),
                    "params": count_params(net),
                    "steps": self.steps,
                    "train_loss": round(loss, 4),
                    "holdout_mIoU": round(miou, 4),
                    "seconds": round(time.perf_counter() - tick, 2),
                }
            )
        for record in sorted((r for part in all_gather(mine) for r in part), key=lambda r: r["sample"]):
            self.history.append(record)
            if rank == 0 and self.logger is not None:
                self.logger.log_metrics(
                    {
                        "search/holdout_mIoU": record["holdout_mIoU"],
                        "search/train_loss": record["train_loss"],
                        "search/params": record["params"],
                    },
                    step=record["sample"],
                )
            log.info(
                "random architecture %d: held-out mIoU %.4f after %d steps (%s)",
                record["sample"],
                record["holdout_mIoU"],
                record["steps"],
                record["path"],
            )
        self.images_seen = sum(r["steps"] for r in self.history) * datamodule.batch_size


def _train(net: nn.Module, loader, steps: int, train: TrainSettings, ignore_index: int, device: torch.device) -> float:
    """``steps`` optimiser steps with the retraining optimiser and schedule (``train``); the mean
    loss of the last quarter of them."""
    optimizer = instantiate(train.optimizer)(net.parameters())
    schedule = build_schedule(optimizer, train.scheduler, steps, power=train.poly_power, min_lr=train.min_lr)
    criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
    net.train()
    losses = []
    batches = itertools.chain.from_iterable(at_epoch(loader, epoch) for epoch in itertools.count())
    for batch in itertools.islice(batches, steps):
        loss = criterion(net(batch["image"].to(device)), batch["mask"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 4) :]
    return sum(tail) / len(tail)


@torch.no_grad()
def _score(
    net: nn.Module, loader, num_classes: int, ignore_index: int, device: torch.device, protocol: EvalProtocol
) -> float:
    metrics = SegmentationMetrics(num_classes, ignore_index, sync_on_compute=False).to(device)
    net.eval()
    for batch in loader:
        batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        for logits, targets in protocol.outputs(net, batch):
            metrics.update(logits, targets["mask"])
    return scores_from_confusion(metrics.compute().cpu())["mIoU"]


def describe_cell(cell: list) -> str:
    """A cell as search.csv's ``cell`` column writes it: ``op(input) + op(input)`` per block,
    blocks joined by ``; `` (:func:`parse_cell` reads it back)."""
    return "; ".join(" + ".join(f"{op}({state})" for op, state in block) for block in cell)


def parse_cell(text: str) -> list[list[list[Any]]]:
    """The cell of a search.csv ``cell`` column (:func:`describe_cell`'s inverse)."""
    cell = []
    for block in text.split("; "):
        pairs = [re.fullmatch(r"(\w+)\((\d+)\)", part.strip()) for part in block.split(" + ")]
        if len(pairs) != 2 or not all(pairs):
            raise ConfigError(f"cell {text!r}: block {block!r} is not 'op(input) + op(input)'")
        cell.append([[match.group(1), int(match.group(2))] for match in pairs])
    return cell
