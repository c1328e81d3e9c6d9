"""Per-generation logging: a line in the run's log (``run.log``), ``search.csv`` in the run
directory, each generation's front in ``fronts.csv`` (to replay how the front moved),
``search/*`` metrics to the run's logger, and for W&B the current front as a table and a
mIoU-against-cost scatter."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from segnas.report.loggers import is_wandb
from segnas.searchers.fmas.pareto import COST_FIELDS

COLUMNS = ("generation", "hypervolume", "front_size", "proposed", "scored", "scored_total", "infeasible",
           "cache_hits", "cache_hits_total", "best_miou", "wall_s")
FRONT_COLUMNS = ("generation", "genotype_hash", "miou", "params", "macs", "latency_ms")

log = logging.getLogger(__name__)


class SearchLog:
    """Appends one row per generation; rows already in a resumed checkpoint are rewritten first."""

    def __init__(self, run_dir: Path, logger: Any, cost: str, history: list[dict[str, Any]], generations: int) -> None:
        self.path = run_dir / "search.csv"
        self.logger = logger
        self.cost = cost
        self.generations = generations
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)

    def __call__(self, row: dict[str, Any], front: list[dict[str, Any]]) -> None:
        best = "none" if row.get("best_miou") is None else f"{row['best_miou']:.4f}"
        log.info("generation %d/%d: hypervolume %.4f, front %d, best mIoU %s, scored %d of %d proposed (%d in all), "
                 "%d infeasible, %d cache hits, %.1f s", row["generation"], self.generations, row["hypervolume"],
                 row["front_size"], best, row["scored"], row["proposed"], row["scored_total"], row["infeasible"],
                 row["cache_hits"], row["wall_s"])
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore").writerow(row)
        fronts = self.path.with_name("fronts.csv")
        new_file = not fronts.is_file()
        with open(fronts, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FRONT_COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows({**r, "generation": row["generation"]} for r in front)
        if self.logger is None:
            return
        metrics = {f"search/{k}": float(row[k]) for k in ("generation", "hypervolume", "front_size",
                                                          "scored_total", "cache_hits_total", "infeasible")}
        if row.get("best_miou") is not None:
            metrics["search/best_miou"] = float(row["best_miou"])
        self.logger.log_metrics(metrics, step=int(row["generation"]))
        if is_wandb(self.logger):
            self._wandb_front(row["generation"], front)

    def _wandb_front(self, generation: int, front: list[dict[str, Any]]) -> None:
        import wandb

        field = COST_FIELDS[self.cost]
        columns = ["generation", "genotype_hash", "miou", field, "genotype"]
        data = [[generation, r["genotype_hash"], r["miou"], r.get(field), json.dumps(r["genotype"])] for r in front]
        table = wandb.Table(columns=columns, data=data)
        self.logger.experiment.log({
            "search/front": table,
            "search/front_scatter": wandb.plot.scatter(table, field, "miou", title=f"front, generation {generation}"),
        })
