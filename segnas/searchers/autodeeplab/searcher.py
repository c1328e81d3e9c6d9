"""The ``autodeeplab`` searcher's entry for the pipeline (see the package docstring)."""

from __future__ import annotations

import logging
import time
from typing import Any

from torch.utils.data import DataLoader

from segnas.data.epoch_seeded import epoch_seeded_loader
from segnas.searchers.autodeeplab.module import AutoDeepLabSearchModule
from segnas.searchers.autodeeplab.records import ArchitectureLog, write_arch_params
from segnas.searchers.autodeeplab.settings import AutoDeepLabSettings
from segnas.searchers.contract import SearchContext
from segnas.searchers.engine import TrainingData, fit_search
from segnas.searchers.result import Candidate, SearchResult

log = logging.getLogger(__name__)


def search(settings: AutoDeepLabSettings, context: SearchContext) -> SearchResult:
    """Train the supernet on trainA (weights) and trainB (α, β) for ``settings.epochs``, scoring
    it on ``settings.val_images`` val images after every epoch; the last epoch's decoded cell and
    path is the one candidate."""
    start = time.monotonic()
    records = ArchitectureLog(context.run_dir, settings.network)
    datamodule = context.datamodule
    datamodule.setup("fit")
    half_a, half_b = datamodule.train_halves()
    data = TrainingData(
        train={"a": _epoch_seeded_loader(datamodule, half_a, 1), "b": _epoch_seeded_loader(datamodule, half_b, 2)},
        val=datamodule.loader(
            datamodule.val_subset(settings.val_images) if settings.val_images else datamodule.eval_dataset("val"),
            train=False,
        ),
        batches=settings.batches_per_epoch,
    )
    if settings.partial_channels > 1:
        log.warning(
            "searcher.partial_channels=%s: PC-DARTS partial channels, an approximation of Auto-DeepLab's supernet",
            settings.partial_channels,
        )
    trainer, module = fit_search(
        context,
        lambda world: AutoDeepLabSearchModule(
            settings, datamodule.num_classes, datamodule.ignore_index, context.protocol, started_at=start
        ),
        callbacks=[records],
        data=data,
    )

    genotype = records.genotype(module.decoded())
    summary: dict[str, Any] = {
        "search_wall_time_s": round(module.wall_time_s, 2),
        "search_epochs": trainer.current_epoch,
        "search_steps": module.weight_steps + module.arch_steps,
        "search_weight_steps": module.weight_steps,
        "search_arch_steps": module.arch_steps,
        "search_images_seen": module.images_seen,
        **context.budget.summary(module.budget_stopped),
        "supernet_params": sum(p.numel() for p in module.supernet.weight_parameters()),
        "search_checkpoint": str(context.run_dir / "last.ckpt"),
        "search_resumed_from": str(context.resume) if context.resume else None,
        "search_val_protocol": context.protocol.describe(),
    }
    if trainer.is_global_zero:
        summary["arch_params"] = str(write_arch_params(context.run_dir / "arch_params.json", module.supernet))
    return SearchResult([Candidate(genotype)], summary)


def _epoch_seeded_loader(datamodule: Any, dataset: Any, stream: int) -> DataLoader:
    """A training loader whose order and augmentation depend only on (seed, epoch, sample), so
    that a resumed search replays exactly; a half smaller than a batch gets the datamodule's error."""
    if len(dataset) < datamodule.batch_size:
        datamodule.loader(dataset, train=True)  # raises the datamodule's own clear error
    return epoch_seeded_loader(dataset, datamodule.seed * 1000 + stream, datamodule.batch_size, datamodule.num_workers)
