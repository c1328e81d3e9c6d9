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
from torch.utils.data import DataLoader

from segnas.data.epoch_seeded import epoch_seeded_loader
from segnas.evaluation import eval_protocol
from segnas.searchers.autodeeplab.module import AutoDeepLabSearchModule
from segnas.searchers.autodeeplab.records import ArchitectureLog, write_arch_params
from segnas.searchers.budget import Budget
from segnas.searchers.engine import RecordFiles, SearchBudget
from segnas.searchers.result import Candidate, SearchResult
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet
from segnas.training.trainer import build_trainer

log = logging.getLogger(__name__)


def search(cfg: DictConfig, run_dir: Path, resume: Path | None, logger: Logger | None) -> SearchResult:
    start = time.monotonic()
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
        recompute=bool(options.recompute), checkpoint_cells=bool(options.checkpoint_cells),
        partial_channels=int(options.partial_channels),
    )
    if int(options.partial_channels) > 1:
        log.warning("searcher.partial_channels=%s: PC-DARTS partial channels, an approximation of "
                    "Auto-DeepLab's supernet", options.partial_channels)
    module = AutoDeepLabSearchModule(
        supernet, datamodule.num_classes, instantiate(options.weight_optimizer), instantiate(options.arch_optimizer),
        weight_min_lr=float(options.weight_min_lr), warmup_epochs=warmup,
        ignore_index=datamodule.ignore_index, channels_last=bool(options.channels_last), protocol=protocol,
        started_at=start,
    )
    limit = options.batches_per_epoch
    budget = Budget.from_config(cfg)
    trainer = build_trainer(cfg, run_dir, logger, datamodule, callbacks=[records, SearchBudget(budget), RecordFiles(run_dir)],
                            max_epochs=epochs,
                            limit_train_batches=int(limit) if limit else 1.0)
    trainer.fit(module, train_dataloaders=train_loaders, val_dataloaders=val_loader,
                ckpt_path=str(resume) if resume else None)

    genotype = records.genotype(module.decoded())
    summary: dict[str, Any] = {
        "search_wall_time_s": round(module.wall_time_s, 2),
        "search_epochs": trainer.current_epoch,
        "search_steps": module.weight_steps + module.arch_steps,
        "search_weight_steps": module.weight_steps,
        "search_arch_steps": module.arch_steps,
        "search_images_seen": module.images_seen,
        **budget.summary(module.budget_stopped),
        "supernet_params": sum(p.numel() for p in supernet.weight_parameters()),
        "search_checkpoint": str(run_dir / "last.ckpt"),
        "search_resumed_from": str(resume) if resume else None,
        "search_val_protocol": protocol.describe(),
    }
    if trainer.is_global_zero:
        summary["arch_params"] = str(write_arch_params(run_dir / "arch_params.json", supernet))
    return SearchResult([Candidate(genotype)], summary)


def _epoch_seeded_loader(datamodule: Any, dataset: Any, stream: int) -> DataLoader:
    """A training loader whose order and augmentation depend only on (seed, epoch, sample), so
    that a resumed search replays exactly; a half smaller than a batch gets the datamodule's error."""
    if len(dataset) < datamodule.batch_size:
        datamodule.loader(dataset, train=True)  # raises the datamodule's own clear error
    return epoch_seeded_loader(dataset, datamodule.seed * 1000 + stream, datamodule.batch_size, datamodule.num_workers)
