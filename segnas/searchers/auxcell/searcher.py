"""The ``auxcell`` searcher's entry for the pipeline (see the package docstring)."""

from __future__ import annotations

import time

from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.report.loggers import is_wandb
from segnas.searchers.auxcell import records
from segnas.searchers.auxcell.diagram import draw_cell
from segnas.searchers.auxcell.module import AuxCellSearchModule, images_seen
from segnas.searchers.auxcell.records import ChildRecord
from segnas.searchers.auxcell.settings import AuxCellSettings
from segnas.searchers.contract import SearchContext
from segnas.searchers.engine import fit_search
from segnas.searchers.result import Candidate, SearchResult
from segnas.settings.run import TaskType


def search(settings: AuxCellSettings, context: SearchContext) -> SearchResult:
    """Sample, train and score ``settings.children`` children; return the ``top_k`` by reward.

    ``last.ckpt`` is written after every round, so an interrupted search resumed from it samples
    the same next children the uninterrupted one would have.
    """
    started = time.monotonic()
    trainer, module = fit_search(context, lambda world: AuxCellSearchModule(settings, context, world, started))
    writer = trainer.is_global_zero  # every rank holds the same state; one writes it
    result = _result(settings, context, module.history, module.wall_time_s, module.cache_s, writer)
    result.summary.update(
        context.budget.summary(module.budget_stopped),
        search_children_per_round=module.per_round,
        search_ranks=trainer.world_size,
        search_device=module.device_name,
        search_resumed_from=str(context.resume) if context.resume else None,
    )
    return result


def _result(
    settings: AuxCellSettings,
    context: SearchContext,
    history: list[ChildRecord],
    wall_s: float,
    cache_s: float,
    writer: bool = True,
) -> SearchResult:
    """The ``top_k`` candidates and the summary on every rank; the plots and the W&B table only
    where ``writer``."""
    run_dir = context.run_dir
    logger = context.logger if writer else None
    plot = records.plot_rewards(run_dir / "reward_curve.png", history) if writer else None
    ranked: dict[str, ChildRecord] = {}
    for record in sorted((r for r in history if r["status"] == "ok"), key=lambda r: -r["reward"]):
        ranked.setdefault(record["genotype_hash"], record)
    best = list(ranked.values())[: settings.top_k]
    if not best:
        raise ConfigError(f"searcher=auxcell: all {len(history)} children failed; see search.csv (column error)")
    cell = (
        draw_cell(
            best[0]["genotype"]["arch"],
            run_dir / "best_cell.png",
            f"best child {best[0]['child']} (reward {best[0]['reward']:.4f}): {best[0]['encoding']}",
        )
        if writer
        else None
    )
    if is_wandb(logger):
        logger.log_table(
            "search/children",
            columns=list(records.COLUMNS),
            data=[[r.get(c) for c in records.COLUMNS] for r in history],
        )
        logger.log_image("search/plots", images=[str(p) for p in (plot, cell) if p is not None])
    candidates = [
        Candidate(
            Genotype.from_dict(r["genotype"]),
            scores={
                "reward": r["reward"],
                "stage1_reward": r.get("stage1_reward"),
                "stage2_reward": r.get("stage2_reward"),
                "child": r["child"],
            },
        )
        for r in best
    ]
    updates = [r["controller_update_s"] for r in history]
    return SearchResult(
        candidates,
        summary={
            "search_wall_time_s": round(wall_s, 2),
            "search_steps": sum(r.get("stage1_steps", 0) + r.get("stage2_steps", 0) for r in history),
            "search_children": len(history),
            "search_failed": sum(r["status"] != "ok" for r in history),
            "search_stopped_early": sum(bool(r.get("stopped_early")) for r in history),
            "search_images_seen": images_seen(history, settings, context.datamodule.batch_size),
            "search_best_reward": best[0]["reward"],
            "search_best_cell": best[0]["cell"],
            "search_encoding": best[0]["encoding"],
            "search_feature_cache_s": round(cache_s, 2),
            "search_controller_update_s_mean": round(sum(updates) / len(updates), 4) if updates else None,
            "search_controller_algorithm": settings.controller.algorithm.value,
            "search_distillation": settings.teacher not in (None, ""),
            "search_encoder_weights": context.backbone_weights or ("pretrained" if context.pretrained else "random"),
            "search_reward_protocol": _reward_protocol(settings, context),
            "search_reward_curve": str(plot) if plot else None,
            "search_best_cell_diagram": str(cell) if cell else None,
        },
    )


def _reward_protocol(settings: AuxCellSettings, context: SearchContext) -> str:
    """How children were scored, in words, for the summary."""
    reward = settings.reward
    omitted = context.task_type == TaskType.segmentation and reward.omit_classes
    return (
        f"held-out train images, shorter side resized to {reward.crop_size or context.crop_size} and "
        "centre-cropped (labels nearest; the authors' held-out transform)"
        + (f", classes {reward.omit_classes} left out of the class means" if omitted else "")
    )
