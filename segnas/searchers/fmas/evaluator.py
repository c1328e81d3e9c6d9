"""Pricing and scoring one sub-network, cheapest first, never the same genotype twice.

Order per candidate (Archai's rule: cheap objectives filter before expensive ones): slice the
sub-network, count params and MACs, check ``max_params`` / ``max_macs``; measure or estimate
latency only when it is an objective or constrained, check ``max_latency_ms``; only a candidate
within every limit is recalibrated and scored on the validation subset, and, when ``miou_int8`` is
an objective, quantized and scored again in int8 (:mod:`.int8`, the dearest step, last). Under DDP, latency is
measured by one rank of a host at a time (:func:`~segnas.searchers.distributed.one_per_host`),
each rank timing its own share, while pricing and scoring run on all ranks at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from torch import nn

from segnas.genotype import Genotype
from segnas.hardware import LatencyTarget, count_macs, count_params
from segnas.nn.elastic import extract
from segnas.searchers.distributed import all_gather, one_per_host, rank_and_world
from segnas.searchers.fmas.encoding import subnet_config
from segnas.searchers.fmas.int8 import Int8Scorer
from segnas.searchers.fmas.scoring import Scorer
from segnas.searchers.fmas.settings import ConstraintSettings


class _Timed(TypedDict, total=False):
    """What a record has once scored (``feasible``) and, when latency is an objective or limited
    and the candidate is within the cheaper limits, timed (``latency_*``)."""

    feasible: bool
    latency_ms: float
    latency_spread_ms: float
    latency_repeat_ms: list[float]
    #: a lookup-table estimate (hardware=gap8), not a measurement
    latency_estimated: bool


class _Quantized(_Timed, total=False):
    """What a feasible record has when ``miou_int8`` is an objective: its scores after int8
    post-training quantization (:class:`~.int8.Int8Scorer`), beside the float32 ``miou``."""

    miou_int8: float
    pixel_acc_int8: float


class SubnetRecord(_Quantized):
    """What the search knows of one sub-network: the search's cache (``SearchState.cache``, in
    the checkpoint), the front, ``pareto.csv`` and ``fronts.csv`` are made of these. Written by
    :class:`Evaluator` alone, in three steps: priced (costs, ``violation`` over the cheap limits),
    timed (latency, when it is an objective or limited, within the cheap limits), scored
    (``feasible``; ``miou`` and ``pixel_acc`` when feasible, else None; ``miou_int8`` and
    ``pixel_acc_int8`` too when feasible and asked for). A plain dict at run
    time, so checkpoints and CSV files hold what they held before it was typed."""

    genotype_hash: str
    #: the genotype's ``arch`` (its space is the supernet's)
    genotype: dict[str, Any]
    params: int
    #: MACs (FLOPs / 2) at the priced input size
    macs: int
    miou: float | None
    pixel_acc: float | None
    #: the DDP rank that priced and scored it (0 in one process)
    scored_by_rank: int
    #: summed relative excess over the limits (0.0: within all)
    violation: float


class Evaluator:
    """Records of sub-networks of ``supernet``, cached by genotype hash. ``objectives`` and
    ``constraints`` are the search's (:class:`~.settings.FMASSettings`); latency is measured on
    ``target`` when it is an objective or limited (the config check asked for a target then);
    ``int8`` scores every feasible candidate in int8 too (given when ``miou_int8`` is an objective)."""

    def __init__(
        self,
        supernet: nn.Module,
        scorer: Scorer,
        objectives: Sequence[str],
        constraints: ConstraintSettings,
        input_size: tuple[int, int],
        target: LatencyTarget | None = None,
        cache: dict[str, SubnetRecord] | None = None,
        int8: Int8Scorer | None = None,
    ) -> None:
        self.supernet = supernet.eval()
        self.scorer = scorer
        self.int8 = int8
        self.limits = constraints.limits()
        self.needs_latency = "latency" in objectives or "latency_ms" in self.limits
        self.input_size = input_size
        self.target = target
        self.cache: dict[str, SubnetRecord] = cache if cache is not None else {}
        self.hits = 0
        self.scored = 0

    def subnet(self, genotype: Genotype, share_weights: bool = False) -> nn.Module:
        """The sub-network of ``genotype``: standalone (to fine-tune), or sharing the supernet's
        unsliced weights (``share_weights``: to score, without copying the supernet)."""
        return extract(self.supernet, subnet_config(genotype), share_weights=share_weights)

    def _violation(self, record: SubnetRecord, fields: Sequence[str]) -> float:
        """Sum of relative excesses over the limits of the record ``fields`` (0 when within all)."""
        total = 0.0
        for field in fields:
            limit = self.limits.get(field)
            if limit is not None:
                total += max(0.0, record[field] / limit - 1.0)
        return total

    def evaluate(self, genotype: Genotype) -> SubnetRecord:
        return self.evaluate_many([genotype])[0]

    def evaluate_many(self, genotypes: Sequence[Genotype]) -> list[SubnetRecord]:
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

    def _price(self, genotype: Genotype) -> tuple[SubnetRecord, nn.Module]:
        """The sliced sub-network and its record: params, MACs and the excess over their limits."""
        net = self.subnet(genotype, share_weights=True)
        record = SubnetRecord(
            genotype_hash=genotype.hash,
            genotype=genotype.arch,
            params=count_params(net),
            macs=count_macs(net, self.input_size),
            miou=None,
            pixel_acc=None,
            scored_by_rank=rank_and_world()[0],
            violation=0.0,
        )
        record["violation"] = self._violation(record, ("params", "macs"))
        return record, net

    def _time(self, record: SubnetRecord, net: nn.Module) -> None:
        """Latency of a candidate within the cheaper limits, with the spread of its repeats."""
        if record["violation"] == 0.0:
            measured = self.target.measure(net, self.input_size)
            record["latency_ms"] = float(measured["latency_ms"])
            record["latency_spread_ms"] = float(measured["latency_spread_ms"])
            record["latency_repeat_ms"] = list(measured["latency_repeat_ms"])
            record["latency_estimated"] = bool(measured["latency_estimated"])
            record["violation"] = self._violation(record, ("latency_ms",))

    def _score(self, record: SubnetRecord, net: nn.Module) -> SubnetRecord:
        """mIoU of a candidate within every limit (float32, then int8 when asked: the network as
        the float32 score prepared it); the record, completed."""
        record["feasible"] = record["violation"] == 0.0
        if record["feasible"]:
            record.update(self.scorer.score(net))
            if self.int8 is not None:
                record.update(self.int8.score(net))
        return record
