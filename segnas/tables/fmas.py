"""The FMAS benchmark table: every sub-network of a (reduced) elastic space, scored once, and the
scorer a replay puts in the search's place.

Why the whole space and not a sample plus a surrogate: a replay of NSGA-II asks for whatever its
crossover and mutation produce, so a table that holds every answer lets it run exactly as the real
search does, with the very scores the real search would have seen (NAS-Bench-201's choice). The
default FMAS space (four widths per stage, variable depths) has about 10^11 members, so the table
is of a reduced one — fewer width and head choices and fixed depths (``conf/experiment/fmas_table.yaml``:
2^6 widths x 2^3 ASPP rates x 4^2 head widths = 8,192) — scored by the search's own
:class:`~segnas.searchers.fmas.evaluator.Evaluator` (slice, params, MACs, BatchNorm recalibration,
val-subset mIoU), so each row is what the search would have recorded for that sub-network.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from segnas import spaces
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.nn.elastic import sort_channels
from segnas.searchers.contract import SearchContext
from segnas.searchers.distributed import search_device
from segnas.searchers.fmas.encoding import Encoding
from segnas.searchers.fmas.evaluator import SubnetRecord
from segnas.searchers.fmas.module import FMASSearchModule, reference_costs
from segnas.searchers.fmas.pareto import front_records, hypervolume, objective_matrix
from segnas.searchers.fmas.settings import ChannelOrder, ConstraintSettings, FMASSettings, Proposals
from segnas.searchers.fmas.supernet import as_elastic, obtain
from segnas.settings.run import TabulateSettings
from segnas.spaces import get_space
from segnas.tables.store import TableWriter, write_meta
from segnas.training import load_network

log = logging.getLogger(__name__)

COLUMNS = (
    "genotype_hash",
    "genes",
    "genotype",
    "miou",
    "pixel_acc",
    "params",
    "macs",
    "latency_ms",
    "latency_spread_ms",
    "feasible",
    "score_s",
)
#: What a replay needs to rebuild the encoding: these searcher.* keys, recorded in table.json.
SETTINGS = ("width_ratios", "head_ratios", "min_depth")


def recorded(settings: FMASSettings) -> dict[str, Any]:
    """The :data:`SETTINGS` of ``settings``, as table.json records them."""
    return {key: getattr(settings, key) for key in SETTINGS}


def encoding_of(space: Any, full: Genotype, settings: Mapping[str, Any]) -> Encoding:
    """The encoding of the space a table recorded (``settings``: table.json's, :func:`recorded`)."""
    return Encoding(
        space, full, list(settings["width_ratios"]), list(settings["head_ratios"]), int(settings["min_depth"])
    )


def space_size(encoding: Encoding) -> int:
    return math.prod(len(gene.choices) for gene in encoding.genes)


def all_genes(encoding: Encoding) -> itertools.product:
    """Every gene vector, in a fixed order (the first gene slowest)."""
    return itertools.product(*(range(len(gene.choices)) for gene in encoding.genes))


def _full_genotype(settings: FMASSettings, space: Any) -> Genotype:
    """The supernet's full genotype, known before any training (a given supernet is only read)."""
    if settings.supernet:
        genotype, _, _ = load_network(settings.supernet)
        return as_elastic(genotype, space, f"searcher.supernet={settings.supernet}")
    return as_elastic(
        spaces.resolve_arch(settings.supernet_arch), space, f"searcher.supernet_arch={settings.supernet_arch}"
    )


def tabulate(settings: FMASSettings, tabulate: TabulateSettings, context: SearchContext) -> dict[str, Any]:
    """Score every sub-network of the ``searcher.*`` space into ``table.csv`` in the run directory."""
    run_dir = context.run_dir
    limit = tabulate.max_architectures
    space = get_space("elastic-deeplabv3plus")
    size = space_size(encoding_of(space, _full_genotype(settings, space), recorded(settings)))
    if size > limit:  # before the supernet trains
        raise ConfigError(
            f"task=tabulate searcher=fmas: the space has {size:,} sub-networks, more than "
            f"tabulate.max_architectures={limit:,}; reduce searcher.width_ratios, searcher.head_ratios "
            "or fix the depths (searcher.min_depth above every stage's depth), "
            "e.g. experiment=fmas_table"
        )
    datamodule = context.datamodule
    datamodule.setup("fit")
    full, supernet, facts = obtain(settings, context, space)
    if settings.channel_order == ChannelOrder.l1:
        sort_channels(supernet)
    # the table holds every sub-network: limits are for a search to apply
    unlimited = dataclasses.replace(settings, constraints=ConstraintSettings())
    module = FMASSearchModule(
        unlimited,
        space,
        full,
        supernet,
        datamodule,
        facts,
        protocol=context.protocol,
        input_size=unlimited.priced_size(context.crop_size),
        target=context.hardware if unlimited.needs_latency() else None,
    )
    device = (
        search_device("cuda" if torch.cuda.is_available() else "cpu")
        if settings.device == "auto"
        else search_device(settings.device)
    )
    module.prepare_scoring(device)
    evaluator, scorer = module.evaluator, module.scorer
    encoding = encoding_of(space, full, recorded(settings))
    references = reference_costs(supernet, module.objectives, module.input_size, evaluator.target)
    root = getattr(datamodule, "root", None)
    meta = {
        "searcher": "fmas",
        "space": space.name,
        "full": full.to_dict(),
        "settings": recorded(settings),
        "supernet": facts["supernet"],
        "objectives": module.objectives,
        "scale": references["scale"],
        "reference_latency": references.get("reference_latency"),
        "input_size": list(module.input_size),
        "size": size,
        "images_per_score": scorer.images_per_score,
        "val_images": settings.val_images,
        "calib_images": settings.calib_images,
        "recalibrate_bn": settings.recalibrate_bn,
        "val_protocol": scorer.protocol.describe(),
        "device": str(device),
        **facts,
        # the validation and calibration subsets are drawn with the data seed: another seed, another table
        "data": {"name": datamodule.name, "root": None if root is None else str(root), "seed": context.seed},
    }
    write_meta(run_dir, meta)
    writer = TableWriter(run_dir, COLUMNS)
    done = writer.done()
    chunk = tabulate.chunk
    start, last_line = time.perf_counter(), 0.0
    pending: list[tuple[list[int], Genotype]] = []

    def flush() -> None:
        tick = time.perf_counter()
        records = evaluator.evaluate_many([g for _, g in pending])
        per = (time.perf_counter() - tick) / max(1, len(pending))
        writer.append({**r, "genes": genes, "score_s": round(per, 4)} for (genes, _), r in zip(pending, records))
        evaluator.cache.clear()  # the table is the cache: thousands of records need not stay twice
        pending.clear()

    for genes in all_genes(encoding):
        genotype = encoding.decode(genes)
        if genotype.hash in done:
            continue
        pending.append((list(genes), genotype))
        if len(pending) == chunk:
            flush()
            if time.perf_counter() - last_line > 30:
                last_line = time.perf_counter()
                log.info("tabulated %d of %d sub-networks, %.0f s", len(writer.rows), size, last_line - start)
    if pending:
        flush()
    rows = writer.rows
    front = front_records(rows, module.objectives, meta["scale"])
    reference = [1.0] + [settings.hv_reference] * (len(module.objectives) - 1)
    summary = {
        "table": str(writer.path),
        "architectures": len(rows),
        "space_size": size,
        "tabulate_wall_time_s": round(time.perf_counter() - start, 2),
        "score_s_median": float(np.median([r["score_s"] for r in rows])),
        "best_miou": max(r["miou"] for r in rows),
        "supernet_miou": max((r["miou"] for r in rows if r["genotype_hash"] == full.hash), default=None),
        "optimal_front_size": len(front),
        "optimal_hypervolume": hypervolume(objective_matrix(front, module.objectives, meta["scale"]), reference),
        "hypervolume_reference": reference,
    }
    write_meta(run_dir, {**meta, **summary})
    return summary


class TableScorer:
    """The :class:`~segnas.searchers.fmas.evaluator.Evaluator` of a replay: the same
    ``evaluate_many`` contract (records in order, a cache by hash, ``hits`` and ``scored``
    counts), each record read from the table instead of sliced and scored."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.table = {str(r["genotype_hash"]): r for r in rows}
        self.cache: dict[str, SubnetRecord] = {}
        self.hits = 0
        self.scored = 0

    def evaluate_many(self, genotypes: Sequence[Genotype]) -> list[SubnetRecord]:
        for genotype in genotypes:
            if genotype.hash in self.cache:
                self.hits += 1
                continue
            row = self.table.get(genotype.hash)
            if row is None:
                raise ConfigError(
                    f"replay: sub-network {genotype.hash} is not in the table (was it tabulated with "
                    "other searcher.width_ratios / head_ratios / min_depth?)"
                )
            self.cache[genotype.hash] = {**row, "violation": 0.0, "feasible": True}
            self.scored += 1
        return [self.cache[g.hash] for g in genotypes]


def replay(
    meta: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    algorithms: Sequence[str],
    seeds: Sequence[int],
    evaluations: int,
    settings: FMASSettings,
    stall: int = 20,
) -> tuple[dict[str, np.ndarray], list[int], float]:
    """Hypervolume after each of the first ``evaluations`` distinct sub-networks, per algorithm
    (:class:`~segnas.searchers.fmas.settings.Proposals`: nsga2, random) and seed: ``curves[name]``
    is (seeds, evaluations). Each run is the search's own generation step
    (:func:`~segnas.searchers.fmas.nsga.run_generation` on a fresh
    :class:`~segnas.searchers.fmas.nsga.SearchState`) with ``settings``' pop_size, crossover and
    mutation settings, the table in the evaluator's place; it runs generations until it has scored
    ``evaluations`` sub-networks (a run that proposes nothing new for ``stall`` generations keeps
    its last hypervolume). Returns the curves, their x values (1..evaluations) and the
    hypervolume of the whole table's front (the optimum)."""
    from segnas.searchers.fmas.nsga import SearchState, build_search_algorithm, run_generation

    unknown = [name for name in algorithms if name not in Proposals.__members__]
    if unknown:
        raise ConfigError(f"replay.algorithms={list(algorithms)}: expected names from {', '.join(Proposals)}")
    space = get_space(str(meta["space"]))
    full = Genotype.from_dict(meta["full"])
    encoding = encoding_of(space, full, meta["settings"])
    objectives, scale = list(meta["objectives"]), meta["scale"]
    reference = [1.0] + [settings.hv_reference] * (len(objectives) - 1)
    optimum = hypervolume(objective_matrix(front_records(rows, objectives, scale), objectives, scale), reference)
    curves = {}
    for name in algorithms:
        values = np.zeros((len(seeds), evaluations))
        for i, seed in enumerate(seeds):
            algorithm = build_search_algorithm(
                Proposals(name),
                encoding,
                len(objectives),
                settings.pop_size,
                10**6,
                seed,
                crossover_prob=settings.crossover_prob,
                mutation_prob=settings.mutation_prob,
            )
            state, scorer, idle = SearchState(algorithm), TableScorer(rows), 0
            while scorer.scored < evaluations and idle < stall:
                before = scorer.scored
                run_generation(state, encoding, scorer, objectives, scale, reference)
                idle = idle + 1 if scorer.scored == before else 0
            values[i] = anytime_hypervolume(
                list(state.cache.values())[:evaluations], objectives, scale, reference, evaluations
            )
        curves[name] = values
    return curves, list(range(1, evaluations + 1)), optimum


def anytime_hypervolume(
    records: Sequence[dict[str, Any]],
    objectives: Sequence[str],
    scale: dict[str, float],
    reference: Sequence[float],
    length: int,
) -> np.ndarray:
    """Hypervolume of the front of the first n records, for n = 1..length (held after the last)."""
    F = objective_matrix(records, objectives, scale)
    out = np.zeros(length)
    front = np.zeros((0, F.shape[1]))
    volume = 0.0
    for n in range(length):
        if n < len(F):
            point = F[n]
            if not np.any(np.all(front <= point, axis=1)):  # not weakly dominated: the front changes
                front = np.vstack([front[~np.all(point <= front, axis=1)], point])
                volume = hypervolume(front, reference)
        out[n] = volume
    return out
