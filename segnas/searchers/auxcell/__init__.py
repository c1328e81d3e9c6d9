"""``searcher=auxcell``: Fast Dense NAS (Nekrasov et al., CVPR 2019) over the ``auxcell`` space.

Each round the controller samples ``searcher.children_per_round`` decoders from one state; each
child trains in two stages (decoder on cached frozen-encoder features with auxiliary heads and
optional distillation, then end to end for the children progressive early stopping lets
through), their held-out rewards update the controller in child order, and their rows join
``search.csv``. The best ``top_k`` children come back with the final width and separable
repeats for the pipeline to retrain from scratch. Children train on ``searcher.device``
(``auto``: the device the Trainer gives this rank).

The search is :class:`.module.AuxCellSearchModule` under one ``Trainer.fit`` (one round per
epoch; :mod:`segnas.searchers.engine`). Under ``trainer=ddp`` / ``ddp_spawn`` a round has one
child per rank by default, each rank trains its own (:func:`.trial.run_round`), results are
gathered, and every rank makes the same controller update, so all hold the same state; rank 0
writes the files. A run with ``children_per_round=W`` in one process samples, trains and learns
exactly what ``W`` ranks do, only one child after another.

``task_type=depth`` runs the same search with one output channel: berHu losses (auxiliary heads
included), distillation as MSE to a depth teacher's map, and a reward from δ1 and RMSE
(``searcher.reward.depth_metrics``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from segnas import targets
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.report.loggers import is_wandb
from segnas.searchers import Candidate, SearchResult
from segnas.searchers.auxcell import records
from segnas.searchers.auxcell.diagram import draw_cell
from segnas.searchers.auxcell.module import AuxCellSearchModule, images_seen
from segnas.searchers.budget import Budget
from segnas.searchers.engine import fit_search

log = logging.getLogger(__name__)


def search(cfg: DictConfig, run_dir: Path, resume: Path | None, logger: Logger | None) -> SearchResult:
    """Sample, train and score ``searcher.children`` children; return the ``top_k`` by reward.

    ``last.ckpt`` is written after every round, so an interrupted search resumed from it samples
    the same next children the uninterrupted one would have.
    """
    started = time.monotonic()
    trainer, module = fit_search(cfg, run_dir, logger, lambda world: AuxCellSearchModule(cfg, world, started),
                                 resume)
    writer = trainer.is_global_zero  # every rank holds the same state; one writes it
    result = _result(run_dir, module.history, module.wall_time_s, module.cache_s, cfg.searcher, cfg,
                     logger if writer else None, writer)
    result.summary.update(Budget.from_config(cfg).summary(module.budget_stopped),
                          search_children_per_round=module.per_round, search_ranks=trainer.world_size,
                          search_device=module.device_name, search_resumed_from=str(resume) if resume else None)
    return result


def _result(run_dir: Path, history: list[dict[str, Any]], wall_s: float, cache_s: float, settings: DictConfig,
            cfg: DictConfig, logger: Logger | None, writer: bool = True) -> SearchResult:
    """The ``top_k`` candidates and the summary on every rank; the plots only where ``writer``."""
    plot = records.plot_rewards(run_dir / "reward_curve.png", history) if writer else None
    ranked: dict[str, dict[str, Any]] = {}
    for record in sorted((r for r in history if r["status"] == "ok"), key=lambda r: -r["reward"]):
        ranked.setdefault(record["genotype_hash"], record)
    best = list(ranked.values())[: int(settings.top_k)]
    if not best:
        raise ConfigError(f"searcher=auxcell: all {len(history)} children failed; see search.csv (column error)")
    cell = draw_cell(best[0]["genotype"]["arch"], run_dir / "best_cell.png",
                     f"best child {best[0]['child']} (reward {best[0]['reward']:.4f}): {best[0]['encoding']}") \
        if writer else None
    if is_wandb(logger):
        logger.log_table("search/children", columns=list(records.COLUMNS),
                         data=[[r.get(c) for c in records.COLUMNS] for r in history])
        logger.log_image("search/plots", images=[str(p) for p in (plot, cell) if p is not None])
    candidates = [Candidate(Genotype.from_dict(r["genotype"]), scores={
        "reward": r["reward"], "stage1_reward": r.get("stage1_reward"), "stage2_reward": r.get("stage2_reward"),
        "child": r["child"]}) for r in best]
    updates = [r["controller_update_s"] for r in history]
    return SearchResult(candidates, summary={
        "search_wall_time_s": round(wall_s, 2),
        "search_steps": sum(r.get("stage1_steps", 0) + r.get("stage2_steps", 0) for r in history),
        "search_children": len(history),
        "search_failed": sum(r["status"] != "ok" for r in history),
        "search_stopped_early": sum(bool(r.get("stopped_early")) for r in history),
        "search_images_seen": images_seen(history, settings, cfg),
        "search_best_reward": best[0]["reward"],
        "search_best_cell": best[0]["cell"],
        "search_encoding": best[0]["encoding"],
        "search_feature_cache_s": round(cache_s, 2),
        "search_controller_update_s_mean": round(sum(updates) / len(updates), 4) if updates else None,
        "search_controller_algorithm": str(settings.controller.algorithm),
        "search_distillation": settings.teacher not in (None, ""),
        "search_encoder_weights": cfg.model.backbone_weights or ("pretrained" if cfg.model.pretrained else "random"),
        "search_reward_protocol": (f"held-out train images, shorter side resized to "
                                   f"{settings.reward.get('crop_size') or cfg.data.crop_size} and centre-cropped "
                                   "(labels nearest; the authors' held-out transform)"
                                   + (f", classes {list(settings.reward.omit_classes)} left out of the class means"
                                      if targets.task_type(cfg) == targets.SEGMENTATION
                                      and settings.reward.omit_classes else "")),
        "search_reward_curve": str(plot) if plot else None,
        "search_best_cell_diagram": str(cell) if cell else None,
    })
