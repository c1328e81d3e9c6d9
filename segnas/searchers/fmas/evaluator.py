"""Pricing and scoring one sub-network, cheapest first, never the same genotype twice.

Order per candidate (Archai's rule: cheap objectives filter before expensive ones): slice the
sub-network, count params and MACs, check ``max_params`` / ``max_macs``; measure or estimate
latency only when it is an objective or constrained, check ``max_latency_ms``; only a candidate
within every limit is recalibrated and scored on the validation subset. Under DDP, latency is
measured by one rank of a host at a time (:func:`~segnas.searchers.distributed.one_per_host`),
each rank timing its own share, while pricing and scoring run on all ranks at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from segnas.genotype import Genotype
from segnas.hardware import LatencyTarget, count_macs, count_params
from segnas.nn.elastic import extract
from segnas.searchers.checks.fmas import CONSTRAINTS, ordered_objectives
from segnas.searchers.fmas.encoding import subnet_config
from segnas.searchers.distributed import all_gather, one_per_host, rank_and_world
from segnas.searchers.fmas.scoring import Scorer


class Evaluator:
    """Records (dicts) of sub-networks of ``supernet``, cached by genotype hash."""

    def __init__(self, supernet: nn.Module, scorer: Scorer, objectives: Sequence[str],
                 constraints: dict[str, float | None], input_size: tuple[int, int],
                 target: LatencyTarget | None = None, cache: dict[str, dict[str, Any]] | None = None) -> None:
        self.supernet = supernet.eval()
        self.scorer = scorer
        self.objectives = ordered_objectives(objectives)
        # names and the hardware target were checked with the config (segnas.searchers.checks.fmas)
        self.constraints = {k: float(v) for k, v in constraints.items() if v is not None}
        self.needs_latency = "latency" in self.objectives or "max_latency_ms" in self.constraints
        self.input_size = input_size
        self.target = target
        self.cache: dict[str, dict[str, Any]] = cache if cache is not None else {}
        self.hits = 0
        self.scored = 0

    def subnet(self, genotype: Genotype, share_weights: bool = False) -> nn.Module:
        """The sub-network of ``genotype``: standalone (to fine-tune), or sharing the supernet's
        unsliced weights (``share_weights``: to score, without copying the supernet)."""
        return extract(self.supernet, subnet_config(genotype), share_weights=share_weights)

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

        When ``torch.distributed`` is initialised with several ranks (the Trainer's DDP strategy under
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
        priced = [self._price(g) for g in list(todo.values())[rank::world]]
        if self.needs_latency:
            def measure() -> None:
                for record, net in priced:
                    self._time(record, net)

            # an estimate times nothing; a measurement never shares a host's cores with another rank's
            # (every rank joins the turns, with or without candidates of its own)
            measure() if self.target.estimated else one_per_host(measure)
        mine = [self._score(record, net) for record, net in priced]
        gathered = {record["genotype_hash"]: record for part in all_gather(mine) for record in part}
        for key in todo:  # in proposal order, whichever rank scored it: the cache reads as one process's
            self.cache[key] = gathered[key]
        self.scored += sum(record["feasible"] for record in gathered.values())
        return [self.cache[g.hash] for g in genotypes]

    def _price(self, genotype: Genotype) -> tuple[dict[str, Any], nn.Module]:
        """The sliced sub-network and its record: params, MACs and the excess over their limits."""
        net = self.subnet(genotype, share_weights=True)
        record: dict[str, Any] = {"genotype_hash": genotype.hash, "genotype": genotype.arch,
                                  "params": count_params(net), "macs": count_macs(net, self.input_size),
                                  "miou": None, "pixel_acc": None, "scored_by_rank": rank_and_world()[0]}
        record["violation"] = self._violation(record, ("max_params", "max_macs"))
        return record, net

    def _time(self, record: dict[str, Any], net: nn.Module) -> None:
        """Latency of a candidate within the cheaper limits, with the spread of its repeats."""
        if record["violation"] == 0.0:
            measured = self.target.measure(net, self.input_size)
            record["latency_ms"] = float(measured["latency_ms"])
            record["latency_spread_ms"] = float(measured["latency_spread_ms"])
            record["latency_repeat_ms"] = list(measured["latency_repeat_ms"])
            record["latency_estimated"] = bool(measured["latency_estimated"])
            record["violation"] = self._violation(record, ("max_latency_ms",))

    def _score(self, record: dict[str, Any], net: nn.Module) -> dict[str, Any]:
        """mIoU of a candidate within every limit; the record, completed."""
        record["feasible"] = record["violation"] == 0.0
        if record["feasible"]:
            record.update(self.scorer.score(net))
        return record
