"""FMAS (Xiong et al., 2023): multi-objective search over the sub-networks of one trained
DeepLabV3+, scored with their inherited weights (no fine-tuning), NSGA-II, and only the Pareto
front handed back for fine-tuning.

``search`` wires the parts: the supernet (:mod:`.supernet`), the integer encoding of its
sub-networks (:mod:`.encoding`), pricing and scoring with a cache (:mod:`.evaluator`,
:mod:`.scoring`), the NSGA-II loop and its checkpoint (:mod:`.nsga`), the front, hypervolume and
plots (:mod:`.pareto`) and per-generation logging (:mod:`.progress`).

Under ``trainer=ddp`` the ranks join one process group before the search
(:func:`segnas.searchers.distributed.join_ranks`), split each population's new sub-networks between them and
all-gather the records (:meth:`.evaluator.Evaluator.evaluate_many`); rank 0 writes the files.
Under ``trainer=ddp_spawn`` only the supernet's training and the front's fine-tuning use the
spawned processes; the search runs in the main process alone. Scoring runs on
``searcher.device`` (``auto``: this process's CUDA device when there is one).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segnas.errors import ConfigError
from segnas.evaluation import eval_protocol
from segnas.genotype import Genotype
from segnas.hardware import count_macs, count_params
from segnas.nn.elastic import sort_hidden_channels
from segnas.searchers.budget import Budget
from segnas.searchers.checks.fmas import ordered_objectives
from segnas.searchers.fmas.encoding import Encoding
from segnas.searchers.distributed import from_rank_zero, join_ranks, rank_and_world, search_device
from segnas.searchers.fmas.evaluator import Evaluator
from segnas.searchers.fmas.nsga import (
    SearchState,
    build_search_algorithm,
    run_generations,
)
from segnas.searchers.fmas.pareto import (
    front_records,
    pick,
    plot_front,
    write_pareto_csv,
)
from segnas.searchers.fmas.progress import SearchLog
from segnas.searchers.fmas.scoring import Scorer, preload
from segnas.searchers.fmas.supernet import obtain
from segnas.searchers.result import Candidate, SearchResult
from segnas.spaces import get_space

def _scale(full_net, objectives: list[str], input_size: tuple[int, int], target) -> dict[str, float]:
    """The full network's costs: objectives are divided by them, which fixes the hypervolume
    reference point before the search starts."""
    scale = {"params": float(count_params(full_net)), "macs": float(count_macs(full_net, input_size))}
    if "latency" in objectives:
        scale["latency"] = float(target.measure(full_net, input_size)["latency_ms"])
    return scale


def search(cfg: DictConfig, run_dir: Path, resume: Path | None, logger: Any) -> SearchResult:
    """Obtain the supernet, run NSGA-II over its sub-networks, return the spread top-k of the front."""
    start = time.perf_counter()
    s = cfg.searcher
    objectives = ordered_objectives(list(s.objectives))  # every key was checked with the config
    join_ranks(cfg.get("trainer"))  # trainer=ddp: every rank searches from here on, together
    space = get_space("elastic-deeplabv3plus")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    state = SearchState.load(resume) if resume is not None else None
    full, supernet, facts = obtain(cfg, run_dir, logger, datamodule, space,
                                   known=state.extra["supernet"] if state else None)
    device = search_device(str(s.get("device", "auto")))
    supernet.to(device).eval()
    if s.channel_order == "l1":
        sort_hidden_channels(supernet)
    recalibrate = bool(s.recalibrate_bn)
    scorer = Scorer(preload(datamodule, datamodule.val_subset(int(s.val_images)), device),
                    preload(datamodule, datamodule.calib_subset(int(s.calib_images)), device) if recalibrate else [],
                    datamodule.num_classes, datamodule.ignore_index, recalibrate, protocol=eval_protocol(cfg))
    constraints = OmegaConf.to_container(s.constraints, resolve=True) if s.get("constraints") else {}
    needs_latency = "latency" in objectives or constraints.get("max_latency_ms") is not None
    target = instantiate(cfg.hardware) if needs_latency and cfg.get("hardware") is not None else None
    input_size = tuple(int(v) for v in s.input_size) if s.get("input_size") else (cfg.data.crop_size,) * 2
    evaluator = Evaluator(supernet, scorer, objectives, constraints, input_size, target)
    encoding = Encoding(space, full, list(s.width_ratios), list(s.head_ratios), int(s.min_depth))
    if state is None:
        algorithm = build_search_algorithm(
            str(s.get("algorithm", "nsga2")), encoding, len(objectives), int(s.pop_size), int(s.generations),
            int(s.seed), crossover_prob=float(s.crossover_prob), crossover_eta=float(s.crossover_eta),
            mutation_prob=None if s.mutation_prob is None else float(s.mutation_prob),
            mutation_eta=float(s.mutation_eta))
        # the full network scored like every candidate: the reference the front is read against
        state = SearchState(algorithm, extra={"supernet": facts["supernet"], "full": full.to_dict(),
                                              "scale": from_rank_zero(_scale(supernet, objectives, input_size, target)),
                                              "supernet_miou": scorer.score(evaluator.subnet(full))["miou"]})
    elif state.extra["full"]["hash"] != full.hash:
        raise ConfigError(f"resume={resume}: the checkpoint searched supernet {state.extra['full']['hash']}, "
                          f"not {full.hash}")
    scale = state.extra["scale"]
    reference = [1.0] + [float(s.hv_reference)] * (len(objectives) - 1)
    cost = objectives[1]
    writer = rank_and_world()[0] == 0  # under DDP every rank holds the same state; one writes it
    budget = Budget.from_config(cfg)
    supernet_images = int(facts.get("supernet_images_seen", 0))

    def spent() -> str | None:  # rank 0's clock decides for every rank (they must stop together)
        return from_rank_zero(budget.exhausted(time.perf_counter() - start,
                                               evaluator.scored * scorer.images_per_score + supernet_images))

    stopped = run_generations(state, encoding, evaluator, objectives, scale, reference, int(s.generations),
                              run_dir / "last.ckpt" if writer else None,
                              SearchLog(run_dir, logger, cost, state.history, int(s.generations)) if writer else None,
                              stop=spent)
    records = list(state.cache.values())
    front = front_records(records, objectives, scale)
    if not front:
        raise ConfigError("FMAS scored no sub-network within searcher.constraints; loosen them")
    estimated = any(r.get("latency_estimated") for r in front)
    pareto_csv, plot = run_dir / "pareto.csv", run_dir / "pareto.png"
    if writer:
        write_pareto_csv(pareto_csv, front, objectives)
        plot_front(plot, records, front, cost, estimated=estimated)
    chosen = pick(front, int(s.top_k))
    score_keys = ["miou", "params", "macs", "latency_ms", "latency_estimated"]
    # networks in train mode: Lightning keeps the mode a module arrives in
    candidates = [Candidate(genotype=Genotype(space.name, r["genotype"]),
                            network=scorer.prepare(evaluator.subnet(Genotype(space.name, r["genotype"]))).cpu().train(),
                            scores={k: r[k] for k in score_keys if r.get(k) is not None})
                  for r in chosen]
    last = state.history[-1]
    summary = {
        "search_wall_time_s": round(time.perf_counter() - start, 2),
        "search_steps": state.scored,
        "search_images_seen": state.scored * scorer.images_per_score + supernet_images,
        **budget.summary(stopped),
        "search_algorithm": str(s.get("algorithm", "nsga2")),
        **facts,
        "supernet_genotype_hash": full.hash,
        "supernet_miou": state.extra["supernet_miou"],
        "supernet_macs": int(scale["macs"]),
        "supernet_params": int(scale["params"]),
        "objectives": objectives,
        "recalibrate_bn": recalibrate,
        "search_val_protocol": scorer.protocol.describe(),
        "generations": state.generation,
        "candidates_scored": state.scored,
        "cache_hits": state.hits,
        "hypervolume": last["hypervolume"],
        "hypervolume_reference": reference,
        "front_size": len(front),
        "pareto_csv": str(pareto_csv),
        "pareto_plot": str(plot),
        "latency_estimated": estimated,
    }

    def on_retrained(entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Mark the fine-tuned front members in pareto.csv and redraw the front before/after."""
        tuned = {e["genotype_hash"]: float(e["val_mIoU"]) for e in entries if e.get("val_mIoU") is not None}
        write_pareto_csv(pareto_csv, front, objectives, tuned)
        plot_front(plot, records, front, cost, tuned, estimated)
        return {"front_finetuned": len(tuned), "front_finetuned_mIoU": tuned}

    return SearchResult(candidates=candidates, summary=summary, on_retrained=on_retrained)


__all__ = ["search"]
