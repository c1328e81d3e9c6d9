"""``searcher=autodeeplab``: Auto-DeepLab's differentiable search (Liu et al., CVPR 2019).

The supernet (``segnas.spaces.autodeeplab.supernet``) trains on trainA / trainB halves of the
training split, alternating weight and architecture steps (``module.py``); every epoch the cell
is decoded greedily and the path by Viterbi (``records.py``). The result is one candidate, the
final decoded genotype, which the pipeline retrains from scratch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from segnas.data.epoch_seeded import EpochSeededDataset, EpochSeededSampler
from segnas.evaluation import eval_protocol
from segnas.searchers.autodeeplab.module import AutoDeepLabSearchModule
from segnas.searchers.autodeeplab.records import ArchitectureLog, write_arch_params
from segnas.searchers.budget import Budget
from segnas.searchers.result import Candidate, SearchResult
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet
from segnas.training.trainer import build_trainer

log = logging.getLogger(__name__)


def search(cfg: DictConfig, run_dir: Path, resume: Path | None, logger: Logger | None) -> SearchResult:
    start = time.perf_counter()
    options = cfg.searcher
    epochs, warmup = int(options.epochs), int(options.warmup_epochs)  # every key was checked with the config
    records = ArchitectureLog(run_dir, OmegaConf.to_container(options.network, resolve=True))

    protocol = eval_protocol(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    half_a, half_b = datamodule.train_halves()
    train_loaders = {"a": _epoch_seeded_loader(datamodule, half_a, 1), "b": _epoch_seeded_loader(datamodule, half_b, 2)}
    val_loader = datamodule.loader(datamodule.val_subset(options.val_images) if options.val_images
                                   else datamodule.eval_dataset("val"), train=False)
    supernet = AutoDeepLabSupernet(
        datamodule.num_classes, int(options.layers), int(options.filter_multiplier), int(options.blocks),
        aspp_channels=None if options.aspp_channels is None else int(options.aspp_channels),
        checkpoint_cells=bool(options.checkpoint_cells),
        partial_channels=int(options.partial_channels),
    )
    if int(options.partial_channels) > 1:
        log.warning("searcher.partial_channels=%s: PC-DARTS partial channels, an approximation of "
                    "Auto-DeepLab's supernet", options.partial_channels)
    module = AutoDeepLabSearchModule(
        supernet, datamodule.num_classes, instantiate(options.weight_optimizer), instantiate(options.arch_optimizer),
        weight_min_lr=float(options.weight_min_lr), warmup_epochs=warmup,
        ignore_index=datamodule.ignore_index, channels_last=bool(options.channels_last), protocol=protocol,
    )
    limit = options.batches_per_epoch
    progress = _Progress(Budget.from_config(cfg), warmup, datamodule.batch_size, start)
    trainer = build_trainer(cfg, run_dir, logger, datamodule, callbacks=[records, progress], max_epochs=epochs,
                            limit_train_batches=int(limit) if limit else 1.0)
    trainer.fit(module, train_dataloaders=train_loaders, val_dataloaders=val_loader,
                ckpt_path=str(resume) if resume else None)

    genotype = records.genotype(module.decoded())
    summary: dict[str, Any] = {
        "search_wall_time_s": round(time.perf_counter() - start, 2),
        "search_epochs": trainer.current_epoch,
        "search_steps": progress.weight_steps + progress.arch_steps,
        "search_weight_steps": progress.weight_steps,
        "search_arch_steps": progress.arch_steps,
        "search_images_seen": progress.images,
        **progress.budget.summary(progress.stopped),
        "supernet_params": sum(p.numel() for p in supernet.weight_parameters()),
        "search_checkpoint": str(run_dir / "last.ckpt"),
        "search_resumed_from": str(resume) if resume else None,
        "search_val_protocol": protocol.describe(),
    }
    if trainer.is_global_zero:
        summary["arch_params"] = str(write_arch_params(run_dir / "arch_params.json", supernet))
    return SearchResult([Candidate(genotype)], summary)


class _Progress(Callback):
    """Counts the steps done so far (from the epoch and batch index, so a resumed search counts
    the steps before the interruption too) and stops training when the budget is spent.

    The counts also travel in the checkpoint: resuming a search that had already finished runs
    no batch (Lightning skips the whole fit loop), and the summary still reports its steps.
    """

    def __init__(self, budget: Budget, warmup_epochs: int, batch_size: int, start: float) -> None:
        self.budget, self.warmup, self.batch_size, self.start = budget, warmup_epochs, batch_size, start
        self.weight_steps = self.arch_steps = self.images = 0
        self.stopped: str | None = None

    def _count(self, trainer, done_in_epoch: int) -> None:
        batches, epoch = trainer.num_training_batches, trainer.current_epoch
        self.weight_steps = epoch * batches + done_in_epoch
        self.arch_steps = max(0, epoch - self.warmup) * batches + (done_in_epoch if epoch >= self.warmup else 0)
        self.images = (self.weight_steps + self.arch_steps) * self.batch_size * trainer.world_size

    def on_train_start(self, trainer, module) -> None:
        self._count(trainer, 0)

    def state_dict(self) -> dict[str, int]:
        return {"weight_steps": self.weight_steps, "arch_steps": self.arch_steps, "images": self.images}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.weight_steps, self.arch_steps = int(state_dict["weight_steps"]), int(state_dict["arch_steps"])
        self.images = int(state_dict["images"])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        self._count(trainer, batch_idx + 1)
        self.stopped = self.budget.exhausted(time.perf_counter() - self.start, self.images)
        if self.stopped:
            log.info("stopping the Auto-DeepLab search: %s", self.stopped)
            trainer.should_stop = True


def _epoch_seeded_loader(datamodule: Any, dataset: Any, stream: int) -> DataLoader:
    """A training loader whose order and augmentation depend only on (seed, epoch, sample), so
    that a resumed search replays exactly."""
    seed = datamodule.seed * 1000 + stream
    if len(dataset) < datamodule.batch_size:
        datamodule.loader(dataset, train=True)  # raises the datamodule's own clear error
    return DataLoader(
        EpochSeededDataset(dataset, seed), batch_size=datamodule.batch_size,
        sampler=EpochSeededSampler(len(dataset), seed), drop_last=True, num_workers=datamodule.num_workers,
        persistent_workers=datamodule.num_workers > 0,
    )
