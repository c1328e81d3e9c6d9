"""Pricing and scoring one sub-network, cheapest first, never the same genotype twice.

Order per candidate (Archai's rule: cheap objectives filter before expensive ones): slice the
sub-network, count params and MACs, check ``max_params`` / ``max_macs``; measure or estimate
latency only when it is an objective or constrained, check ``max_latency_ms``; only a candidate
within every limit is recalibrated and scored on the validation subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch.distributed as dist
from lightning_fabric import Fabric
from torch import nn

from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.hardware import LatencyTarget, count_macs, count_params
from segnas.nn.elastic import extract
from segnas.searchers.fmas.encoding import subnet_config
from segnas.searchers.fmas.scoring import Scorer

OBJECTIVES = ("miou", "params", "macs", "latency")
#: Constraint config keys and the record field each limits.
CONSTRAINTS = {"max_params": "params", "max_macs": "macs", "max_latency_ms": "latency_ms"}
T = TypeVar("T")


def check_objectives(objectives: Sequence[str]) -> list[str]:
    objectives = [str(o) for o in objectives]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or "miou" not in objectives or len(objectives) < 2 or len(set(objectives)) != len(objectives):
        raise ConfigError(f"searcher.objectives={objectives}: expected miou and at least one of "
                          f"params, macs, latency, each once (known: {', '.join(OBJECTIVES)})")
    return ["miou", *[o for o in objectives if o != "miou"]]


class Evaluator:
    """Records (dicts) of sub-networks of ``supernet``, cached by genotype hash."""

    def __init__(self, supernet: nn.Module, scorer: Scorer, objectives: Sequence[str],
                 constraints: dict[str, float | None], input_size: tuple[int, int],
                 target: LatencyTarget | None = None, cache: dict[str, dict[str, Any]] | None = None) -> None:
        self.supernet = supernet.eval()
        self.scorer = scorer
        self.objectives = check_objectives(objectives)
        self.constraints = {k: float(v) for k, v in constraints.items() if v is not None}
        unknown = sorted(set(self.constraints) - set(CONSTRAINTS))
        if unknown:
            raise ConfigError(f"searcher.constraints: unknown key(s) {unknown}; known: {sorted(CONSTRAINTS)}")
        self.needs_latency = "latency" in self.objectives or "max_latency_ms" in self.constraints
        if self.needs_latency and target is None:
            raise ConfigError("searcher.objectives or searcher.constraints use latency but no hardware "
                              "target is configured: pick hardware=cpu, onnx_cpu or gap8")
        self.input_size = input_size
        self.target = target
        self.cache: dict[str, dict[str, Any]] = cache if cache is not None else {}
        self.hits = 0
        self.scored = 0

    def subnet(self, genotype: Genotype) -> nn.Module:
        return extract(self.supernet, subnet_config(genotype))

    def _violation(self, record: dict[str, Any], keys: Sequence[str]) -> float:
        """Sum of relative excesses over the limits in ``keys`` (0 when within all)."""
        total = 0.0
        for key in keys:
            limit = self.constraints.get(key)
            if limit is not None:
                total += max(0.0, record[CONSTRAINTS[key]] / limit - 1.0)
        return total

    def evaluate(self, genotype: Genotype) -> dict[str, Any]:
        return self.evaluate_many([genotype])[0]

    def evaluate_many(self, genotypes: Sequence[Genotype]) -> list[dict[str, Any]]:
        """Records of ``genotypes`` in order; the ones not cached yet are priced and scored.

        When ``torch.distributed`` is initialised with several ranks (:func:`join_ranks` under
        ``trainer=ddp``), each rank prices and scores every ``world_size``-th new genotype and the
        records are all-gathered, so every rank ends with the same cache (and the same NSGA-II
        state) at a fraction of the work. ``scored_by_rank`` in a record says which rank did it.
        """
        todo: dict[str, Genotype] = {}
        for genotype in genotypes:
            if genotype.hash in self.cache or genotype.hash in todo:
                self.hits += 1
            else:
                todo[genotype.hash] = genotype
        rank, world = rank_and_world()
        mine = [self._evaluate_new(g) for g in list(todo.values())[rank::world]]
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, mine)
            mine = [record for part in gathered for record in part]
        for record in mine:
            self.cache[record["genotype_hash"]] = record
        self.scored += sum(record["feasible"] for record in mine)
        return [self.cache[g.hash] for g in genotypes]

    def _evaluate_new(self, genotype: Genotype) -> dict[str, Any]:
        net = self.subnet(genotype)
        record: dict[str, Any] = {"genotype_hash": genotype.hash, "genotype": genotype.arch,
                                  "params": count_params(net), "macs": count_macs(net, self.input_size),
                                  "miou": None, "pixel_acc": None, "scored_by_rank": rank_and_world()[0]}
        violation = self._violation(record, ("max_params", "max_macs"))
        if violation == 0.0 and self.needs_latency:
            measured = self.target.measure(net, self.input_size)
            record["latency_ms"] = float(measured["latency_ms"])
            record["latency_estimated"] = bool(measured["latency_estimated"])
            violation = self._violation(record, ("max_latency_ms",))
        record["violation"] = violation
        record["feasible"] = violation == 0.0
        if record["feasible"]:
            record.update(self.scorer.score(net))
        return record


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def join_ranks(trainer: Mapping[str, Any] | None) -> None:
    """Start (rank 0) or join (the other ranks) the process group of a ``strategy=ddp`` trainer now.

    Lightning's ``ddp`` launcher starts the other ranks, each re-running the whole command, when
    the first Trainer fits. FMAS needs them before that: with a given supernet no Trainer fits
    before the search, so the other ranks would start only at fine-tuning and each would run the
    whole search again on its own, writing its own files. Launched here through Fabric, all ranks
    search together, and the Trainers built later find the group up and use it.

    Spawn strategies (``ddp_spawn``) are left alone: their group lives in child processes for one
    fit call, so the search runs in this process alone (unsplit, but the same result).
    """
    if trainer is None or rank_and_world()[1] > 1:
        return
    strategy = str(trainer.get("strategy", "auto"))
    if not strategy.startswith("ddp") or any(kind in strategy for kind in ("spawn", "fork", "notebook")):
        return
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1))
    if devices == 1 and nodes == 1:
        return
    Fabric(accelerator=str(trainer.get("accelerator", "auto")), devices=devices, num_nodes=nodes,
           strategy="ddp").launch()


def from_rank_zero(value: T) -> T:
    """Rank 0's ``value`` on every rank (``value`` itself without a process group).

    For what each rank would otherwise measure on its own (the full network's latency, which
    scales the objectives; the wall clock that decides when the budget is spent): every rank
    must hold the same NSGA-II state and stop at the same generation, or the all-gathers of
    :meth:`Evaluator.evaluate_many` pair up different generations or wait forever.
    """
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
