"""The FMAS search as a LightningModule: one ``training_step`` is one generation.

A generation asks pymoo for a population, prices and scores this rank's share of the sub-networks
not scored before (no fine-tuning; :class:`~.evaluator.Evaluator`, its cache and the records
all-gathered so every rank holds the same cache), and tells pymoo the objectives. The pymoo
algorithm, the cache, the per-generation rows and fronts travel in the Lightning checkpoint, so
``resume=`` (``ckpt_path``) continues with the same next population. The front's size and
hypervolume are logged with ``self.log``, the front itself as a W&B table per generation.

The supernet and the sub-networks sliced from it are kept outside the module's registered
children: each rank scores its own candidates, and the BatchNorm layer sync would all-reduce the
statistics of different networks.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segnas.errors import ConfigError
from segnas.evaluation import eval_protocol
from segnas.genotype import Genotype
from segnas.hardware import count_macs, count_params
from segnas.report.loggers import is_wandb
from segnas.searchers.checks.fmas import ordered_objectives
from segnas.searchers.distributed import from_rank_zero, rank_and_world, search_device
from segnas.searchers.engine import SearchModule
from segnas.searchers.fmas.encoding import Encoding
from segnas.searchers.fmas.evaluator import Evaluator
from segnas.searchers.fmas.nsga import SearchState, build_search_algorithm, run_generation
from segnas.searchers.fmas.pareto import COST_FIELDS
from segnas.searchers.fmas.scoring import Scorer, preload
from segnas.spaces.elastic_deeplabv3plus import ElasticDeepLabV3PlusSpace
from segnas.training.spawned import own_tensors_of

log = logging.getLogger(__name__)

COLUMNS = ("generation", "hypervolume", "front_size", "proposed", "scored", "scored_total", "infeasible",
           "cache_hits", "cache_hits_total", "best_miou", "wall_s")
FRONT_COLUMNS = ("generation", "genotype_hash", "miou", "params", "macs", "latency_ms")


class FMASSearchModule(SearchModule):
    """``searcher.generations`` generations of NSGA-II (or uniform proposals) over the
    sub-networks of ``supernet`` (whose full genotype is ``full``), scored on ``datamodule``'s
    validation subset. ``facts`` are the supernet's summary entries (where it came from, the
    images its training saw)."""

    unit_name = "generation"

    def __init__(self, cfg: DictConfig, space: ElasticDeepLabV3PlusSpace, full: Genotype, supernet: torch.nn.Module,
                 datamodule: Any, facts: dict[str, Any], started_at: float | None = None) -> None:
        settings = cfg.searcher
        super().__init__(units=int(settings.generations))
        self.start_clock(started_at)
        self.cfg, self.settings, self.space, self.full, self.facts = cfg, settings, space, full, facts
        self.datamodule = datamodule
        self.objectives = ordered_objectives(list(settings.objectives))
        self.reference = [1.0] + [float(settings.hv_reference)] * (len(self.objectives) - 1)
        self.supernet_images = int(facts.get("supernet_images_seen", 0))
        self.networks = {"supernet": supernet}  # a dict: not a registered child (see the module docstring)
        self.encoding = Encoding(space, full, list(settings.width_ratios), list(settings.head_ratios),
                                 int(settings.min_depth))
        self.state = SearchState(build_search_algorithm(
            str(settings.get("algorithm", "nsga2")), self.encoding, len(self.objectives), int(settings.pop_size),
            int(settings.generations), int(settings.seed), crossover_prob=float(settings.crossover_prob),
            mutation_prob=None if settings.mutation_prob is None else float(settings.mutation_prob)),
            extra={"supernet": facts["supernet"], "full": full.to_dict()})
        self.scorer: Scorer | None = None
        self.evaluator: Evaluator | None = None
        self.device_name = str(settings.get("device", "auto"))

    # the search's state ------------------------------------------------------------------------

    def search_state(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_search_state(self, state: dict[str, Any]) -> None:
        restored = SearchState.from_dict(state)
        if restored.extra["full"]["hash"] != self.full.hash:
            raise ConfigError(f"resume: the checkpoint searched supernet {restored.extra['full']['hash']}, "
                              f"not {self.full.hash}")
        self.state = restored
        self.images_seen = self._images()

    def replicated_state(self) -> dict[str, Any]:
        return self.state.population()

    def record_files(self) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
        return {"search.csv": (COLUMNS, self.state.history), "fronts.csv": (FRONT_COLUMNS, self.state.fronts)}

    def best_score(self) -> float | None:
        """The front's best val-subset mIoU so far."""
        return self.state.history[-1].get("best_miou") if self.state.history else None

    def unit_line(self) -> str:
        row = self.state.history[-1]
        best = "none" if row.get("best_miou") is None else f"{row['best_miou']:.4f}"
        return (f"generation {row['generation']}/{self.units}: hypervolume {row['hypervolume']:.4f}, front "
                f"{row['front_size']}, best mIoU {best}, scored {row['scored']} of {row['proposed']} proposed "
                f"({row['scored_total']} in all), {row['infeasible']} infeasible, {row['cache_hits']} cache hits, "
                f"{row['wall_s']:.1f} s")

    def _images(self) -> int:
        per_score = self.scorer.images_per_score if self.scorer is not None else 0
        return self.state.scored * per_score + self.supernet_images

    # building ----------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        self.prepare_scoring(self.trainer.strategy.root_device)

    def prepare_scoring(self, root_device: torch.device) -> None:
        """The scorer (validation and calibration batches preloaded on the device) and the
        evaluator, built once per process: a spawned rank builds its own, the launching process
        its own when it slices the chosen sub-networks afterwards."""
        if self.evaluator is not None:
            return
        s, cfg = self.settings, self.cfg
        supernet = self.networks["supernet"]
        own_tensors_of(supernet)  # a spawned rank's supernet is its own
        device = root_device if s.get("device", "auto") == "auto" else search_device(str(s.device))
        self.device_name = str(device)
        supernet.to(device).eval()
        datamodule = self.datamodule
        recalibrate = bool(s.recalibrate_bn)
        self.scorer = Scorer(preload(datamodule, datamodule.val_subset(int(s.val_images)), device),
                             preload(datamodule, datamodule.calib_subset(int(s.calib_images)), device)
                             if recalibrate else [],
                             datamodule.num_classes, datamodule.ignore_index, recalibrate, protocol=eval_protocol(cfg),
                             batch_size=None if s.score_batch_size is None else int(s.score_batch_size))
        constraints = OmegaConf.to_container(s.constraints, resolve=True) if s.get("constraints") else {}
        needs_latency = "latency" in self.objectives or constraints.get("max_latency_ms") is not None
        target = instantiate(cfg.hardware) if needs_latency and cfg.get("hardware") is not None else None
        self.input_size = tuple(int(v) for v in s.input_size) if s.get("input_size") else (cfg.data.crop_size,) * 2
        self.evaluator = Evaluator(supernet, self.scorer, self.objectives, constraints, self.input_size, target)

    # one generation ----------------------------------------------------------------------------

    def run_unit(self, index: int) -> None:
        assert self.evaluator is not None and self.scorer is not None
        extra = self.state.extra
        if "scale" not in extra:
            # the full network priced like every candidate: the reference the front is read against
            extra.update(reference_costs(self.networks["supernet"], self.objectives, self.input_size,
                                         self.evaluator.target))
            extra["supernet_miou"] = self.scorer.score(self.evaluator.subnet(self.full, share_weights=True))["miou"]
            if "reference_latency" in extra:
                reference = extra["reference_latency"]
                log.info("reference network (the full supernet) latency %.3f ms: medians of %d repeats %s, "
                         "spread %.3f ms (%.1f %% of it)", reference["latency_ms"],
                         len(reference["latency_repeat_ms"]), reference["latency_repeat_ms"],
                         reference["latency_spread_ms"],
                         100 * reference["latency_spread_ms"] / reference["latency_ms"])
        row, front = run_generation(self.state, self.encoding, self.evaluator, self.objectives, extra["scale"],
                                    self.reference)
        self.images_seen = self._images()
        metrics = {f"search/{k}": float(row[k]) for k in ("hypervolume", "front_size", "scored_total",
                                                          "cache_hits_total", "infeasible")}
        if row.get("best_miou") is not None:
            metrics["search/best_miou"] = float(row["best_miou"])
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=1)
        if rank_and_world()[0] == 0 and is_wandb(self.logger):
            self._wandb_front(row["generation"], front)

    def _wandb_front(self, generation: int, front: list[dict[str, Any]]) -> None:
        import wandb

        field = COST_FIELDS[self.objectives[1]]
        columns = ["generation", "genotype_hash", "miou", field, "genotype"]
        data = [[generation, r["genotype_hash"], r["miou"], r.get(field), json.dumps(r["genotype"])] for r in front]
        table = wandb.Table(columns=columns, data=data)
        self.logger.experiment.log({
            "search/front": table,
            "search/front_scatter": wandb.plot.scatter(table, field, "miou", title=f"front, generation {generation}"),
        })


def reference_costs(full_net: torch.nn.Module, objectives: list[str], input_size: tuple[int, int], target: Any
                    ) -> dict[str, Any]:
    """The full network's costs (``scale``): objectives are divided by them, which fixes the
    hypervolume reference point before the search starts. Its latency is measured as every
    candidate's is (the same target and repeats) and its repeats travel with it
    (``reference_latency``): a normaliser that wobbles moves every latency objective with it.

    Rank 0 alone prices it, the other ranks waiting for its result: every rank must hold one state,
    and no other rank times anything on the cores meanwhile.
    """
    if rank_and_world()[0] != 0:
        return from_rank_zero({})
    scale = {"params": float(count_params(full_net)), "macs": float(count_macs(full_net, input_size))}
    costs: dict[str, Any] = {"scale": scale}
    if "latency" in objectives:
        measured = target.measure(full_net, input_size)
        scale["latency"] = float(measured["latency_ms"])
        costs["reference_latency"] = {key: measured[key] for key in (
            "latency_ms", "latency_repeat_ms", "latency_spread_ms", "latency_estimated")}
    return from_rank_zero(costs)
