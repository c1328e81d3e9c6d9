"""The FMAS search as a LightningModule: one ``training_step`` is one generation.

A generation asks pymoo for a population, prices and scores this rank's share of the sub-networks
not scored before (no fine-tuning; in float32, and in int8 too with ``miou_int8``;
:class:`~.evaluator.Evaluator`, its cache and the records all-gathered so every rank holds the
same cache), and tells pymoo the objectives. The pymoo
algorithm, the cache, the per-generation rows and fronts travel in the Lightning checkpoint, so
``resume=`` (``ckpt_path``) continues with the same next population. The front's size and
hypervolume are logged with ``self.log``, the front itself as a W&B table per generation.

The supernet and the sub-networks sliced from it are kept outside the module's registered
children: each rank scores its own candidates, and the BatchNorm layer sync would all-reduce the
statistics of different networks.

The module is pickled into ``ddp_spawn`` ranks: it holds its typed settings, the supernet, the
data module, the evaluation protocol and the hardware target, never the run's config or its
:class:`~segnas.searchers.contract.SearchContext` (whose builders close over the logger).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from segnas.errors import ConfigError
from segnas.evaluation import EvalProtocol
from segnas.genotype import Genotype
from segnas.hardware import LatencyTarget, count_macs, count_params
from segnas.report.loggers import is_wandb
from segnas.searchers.distributed import from_rank_zero, rank_and_world, search_device
from segnas.searchers.engine import SearchModule
from segnas.searchers.fmas.encoding import Encoding
from segnas.searchers.fmas.evaluator import Evaluator, SubnetRecord
from segnas.searchers.fmas.int8 import Int8Scorer
from segnas.searchers.fmas.nsga import SearchState, build_search_algorithm, run_generation
from segnas.searchers.fmas.pareto import COST_FIELDS
from segnas.searchers.fmas.scoring import Scorer, preload
from segnas.searchers.fmas.settings import FMASSettings, Proposals
from segnas.spaces.elastic_deeplabv3plus import ElasticDeepLabV3PlusSpace
from segnas.training.spawned import own_tensors_of

log = logging.getLogger(__name__)

COLUMNS = (
    "generation",
    "hypervolume",
    "front_size",
    "proposed",
    "scored",
    "scored_total",
    "infeasible",
    "cache_hits",
    "cache_hits_total",
    "best_miou",
    "wall_s",
)
FRONT_COLUMNS = ("generation", "genotype_hash", "miou", "params", "macs", "latency_ms")
#: Where the int8 score joins those files (``miou_int8`` an objective): after the float32 one.
INT8_COLUMNS = {"best_miou": "best_miou_int8", "miou": "miou_int8"}


class FMASSearchModule(SearchModule):
    """``settings.generations`` generations of NSGA-II (or uniform ``proposals``) over the
    sub-networks of ``supernet`` (whose full genotype is ``full``), scored by ``protocol`` on
    ``datamodule``'s validation subset, priced at ``input_size`` and timed on ``target`` (when
    latency is an objective or limited). ``facts`` are the supernet's summary entries (where it
    came from, the images its training saw)."""

    unit_name = "generation"

    def __init__(
        self,
        settings: FMASSettings,
        space: ElasticDeepLabV3PlusSpace,
        full: Genotype,
        supernet: torch.nn.Module,
        datamodule: Any,
        facts: dict[str, Any],
        *,
        protocol: EvalProtocol,
        input_size: tuple[int, int],
        target: LatencyTarget | None,
        proposals: Proposals = Proposals.nsga2,
        started_at: float | None = None,
    ) -> None:
        super().__init__(units=settings.generations)
        self.start_clock(started_at)
        self.settings, self.space, self.full, self.facts = settings, space, full, facts
        self.datamodule, self.protocol, self.input_size, self.target = datamodule, protocol, input_size, target
        self.objectives = settings.ordered_objectives
        self.reference = [1.0] + [settings.hv_reference] * (len(self.objectives) - 1)
        self.supernet_images = int(facts.get("supernet_images_seen", 0))
        self.networks = {"supernet": supernet}  # a dict: not a registered child (see the module docstring)
        self.encoding = Encoding(space, full, settings.width_ratios, settings.head_ratios, settings.min_depth)
        self.state = SearchState(
            build_search_algorithm(
                proposals,
                self.encoding,
                len(self.objectives),
                settings.pop_size,
                settings.generations,
                settings.seed,
                crossover_prob=settings.crossover_prob,
                mutation_prob=settings.mutation_prob,
            ),
            extra={"supernet": facts["supernet"], "full": full.to_dict()},
        )
        self.scorer: Scorer | None = None
        self.int8: Int8Scorer | None = None
        self.evaluator: Evaluator | None = None
        self.device_name = settings.device

    # the search's state ------------------------------------------------------------------------

    def search_state(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_search_state(self, state: dict[str, Any]) -> None:
        restored = SearchState.from_dict(state)
        if restored.extra["full"]["hash"] != self.full.hash:
            raise ConfigError(
                f"resume: the checkpoint searched supernet {restored.extra['full']['hash']}, not {self.full.hash}"
            )
        self.state = restored
        self.images_seen = self._images()

    def replicated_state(self) -> dict[str, Any]:
        return self.state.population()

    def record_files(self) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
        return {
            "search.csv": (self._columns(COLUMNS), self.state.history),
            "fronts.csv": (self._columns(FRONT_COLUMNS), self.state.fronts),
        }

    def _columns(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        """``columns``, each float32 score followed by its int8 one when ``miou_int8`` is an objective."""
        if not self.settings.needs_int8():
            return columns
        return tuple(c for column in columns for c in (column, INT8_COLUMNS.get(column)) if c is not None)

    def best_score(self) -> float | None:
        """The front's best val-subset score so far, by the first accuracy objective (mIoU, or int8 mIoU)."""
        return self.state.history[-1].get(f"best_{self.objectives[0]}") if self.state.history else None

    def unit_line(self) -> str:
        row = self.state.history[-1]
        best = "none" if row.get("best_miou") is None else f"{row['best_miou']:.4f}"
        if row.get("best_miou_int8") is not None:
            best += f" (int8 {row['best_miou_int8']:.4f})"
        return (
            f"generation {row['generation']}/{self.units}: hypervolume {row['hypervolume']:.4f}, front "
            f"{row['front_size']}, best mIoU {best}, scored {row['scored']} of {row['proposed']} proposed "
            f"({row['scored_total']} in all), {row['infeasible']} infeasible, {row['cache_hits']} cache hits, "
            f"{row['wall_s']:.1f} s"
        )

    def _images(self) -> int:
        per_score = sum(s.images_per_score for s in (self.scorer, self.int8) if s is not None)
        return self.state.scored * per_score + self.supernet_images

    # building ----------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Each process that runs the search (this one, or each spawned rank) prepares its scoring."""
        self.prepare_scoring(self.trainer.strategy.root_device)

    def prepare_scoring(self, root_device: torch.device) -> None:
        """The scorer (validation and calibration batches preloaded on the device), the int8 scorer
        (``miou_int8``: calibrated on the same calibration images) and the evaluator of this
        process. Called once per process: by :meth:`setup` where the search runs, and by a process
        that slices sub-networks without having run it (the launching process of ``ddp_spawn``
        ranks, a table)."""
        s = self.settings
        supernet = self.networks["supernet"]
        own_tensors_of(supernet)  # a spawned rank's supernet is its own
        device = root_device if s.device == "auto" else search_device(s.device)
        self.device_name = str(device)
        supernet.to(device).eval()
        datamodule = self.datamodule
        calibration = (
            preload(datamodule, datamodule.calib_subset(s.calib_images), device)
            if s.recalibrate_bn or s.needs_int8()
            else []
        )
        self.scorer = Scorer(
            preload(datamodule, datamodule.val_subset(s.val_images), device),
            calibration if s.recalibrate_bn else [],
            datamodule.num_classes,
            datamodule.ignore_index,
            s.recalibrate_bn,
            protocol=self.protocol,
            batch_size=s.score_batch_size,
        )
        if s.needs_int8():
            self.int8 = Int8Scorer(
                self.scorer, [image for batch in calibration for image in batch["image"]], self.input_size
            )
        self.evaluator = Evaluator(
            supernet, self.scorer, self.objectives, s.constraints, self.input_size, self.target, int8=self.int8
        )

    # one generation ----------------------------------------------------------------------------

    def run_unit(self, index: int) -> None:
        assert self.evaluator is not None and self.scorer is not None
        extra = self.state.extra
        if "scale" not in extra:
            # the full network priced like every candidate: the reference the front is read against
            extra.update(
                reference_costs(self.networks["supernet"], self.objectives, self.input_size, self.evaluator.target)
            )
            full_net = self.evaluator.subnet(self.full, share_weights=True)
            extra["supernet_miou"] = self.scorer.score(full_net)["miou"]
            if self.int8 is not None:  # also the first quantization: a network that cannot be fails here
                extra["supernet_miou_int8"] = self.int8.score(full_net)["miou_int8"]
            if "reference_latency" in extra:
                reference = extra["reference_latency"]
                log.info(
                    "reference network (the full supernet) latency %.3f ms: medians of %d repeats %s, "
                    "spread %.3f ms (%.1f %% of it)",
                    reference["latency_ms"],
                    len(reference["latency_repeat_ms"]),
                    reference["latency_repeat_ms"],
                    reference["latency_spread_ms"],
                    100 * reference["latency_spread_ms"] / reference["latency_ms"],
                )
        row, front = run_generation(
            self.state, self.encoding, self.evaluator, self.objectives, extra["scale"], self.reference
        )
        self.images_seen = self._images()
        metrics = {
            f"search/{k}": float(row[k])
            for k in ("hypervolume", "front_size", "scored_total", "cache_hits_total", "infeasible")
        }
        for best in ("best_miou", "best_miou_int8"):
            if row.get(best) is not None:
                metrics[f"search/{best}"] = float(row[best])
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=1)
        if rank_and_world()[0] == 0 and is_wandb(self.logger):
            self._wandb_front(row["generation"], front)

    def _wandb_front(self, generation: int, front: list[SubnetRecord]) -> None:
        import wandb

        accuracy = self.objectives[0]
        field = COST_FIELDS[next(o for o in self.objectives if o in COST_FIELDS)]
        columns = ["generation", "genotype_hash", accuracy, field, "genotype"]
        data = [[generation, r["genotype_hash"], r[accuracy], r.get(field), json.dumps(r["genotype"])] for r in front]
        table = wandb.Table(columns=columns, data=data)
        self.logger.experiment.log(
            {
                "search/front": table,
                "search/front_scatter": wandb.plot.scatter(
                    table, field, accuracy, title=f"front, generation {generation}"
                ),
            }
        )


def reference_costs(
    full_net: torch.nn.Module, objectives: list[str], input_size: tuple[int, int], target: Any
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
        costs["reference_latency"] = {
            key: measured[key] for key in ("latency_ms", "latency_repeat_ms", "latency_spread_ms", "latency_estimated")
        }
    return from_rank_zero(costs)
