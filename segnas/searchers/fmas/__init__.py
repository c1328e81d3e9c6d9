"""FMAS (Xiong et al., 2023): multi-objective search over the sub-networks of one trained
DeepLabV3+, scored with their inherited weights (no fine-tuning), NSGA-II, and only the Pareto
front handed back for fine-tuning.

``search`` wires the parts: the supernet (:mod:`.supernet`, trained by an ordinary Trainer fit
when none is given), then :class:`.module.FMASSearchModule` under one ``Trainer.fit`` (one
generation per epoch; :mod:`segnas.searchers.engine`): the integer encoding of the sub-networks
(:mod:`.encoding`), pricing and scoring with a cache (:mod:`.evaluator`, :mod:`.scoring`), the
NSGA-II step (:mod:`.nsga`), and the front, hypervolume and plots (:mod:`.pareto`).

Under ``trainer=ddp`` / ``ddp_spawn`` the Trainer's ranks split each population's new
sub-networks between them and all-gather the records
(:meth:`.evaluator.Evaluator.evaluate_many`); rank 0 writes the files. Scoring runs on
``searcher.device`` (``auto``: the device the Trainer gives this rank).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.nn.elastic import sort_channels
from segnas.searchers.budget import Budget
from segnas.searchers.checks.fmas import ordered_objectives
from segnas.searchers.engine import STATE_KEY, fit_search
from segnas.searchers.fmas.module import FMASSearchModule
from segnas.searchers.fmas.pareto import front_records, hypervolume, objective_matrix, pick, plot_front, write_pareto_csv
from segnas.searchers.fmas.supernet import obtain
from segnas.searchers.result import Candidate, SearchResult
from segnas.spaces import get_space


def search(cfg: DictConfig, run_dir: Path, resume: Path | None, logger: Any) -> SearchResult:
    """Obtain the supernet, run NSGA-II over its sub-networks, return the front (or ``top_k`` spread along it)."""
    started = time.monotonic()
    s = cfg.searcher
    objectives = ordered_objectives(list(s.objectives))  # every key was checked with the config
    space = get_space("elastic-deeplabv3plus")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    val = len(datamodule.source("val"))
    if int(s.val_images) >= val:  # before the supernet trains: the report needs val images the search never scored
        raise ConfigError(f"searcher.val_images={s.val_images}: the search would score candidates on all {val} val "
                          "images and leave none to report the result on (the pipeline reports on the rest of val); "
                          f"use at most {val - 1}")
    known = _searched_supernet(resume) if resume is not None else None
    full, supernet, facts = obtain(cfg, run_dir, logger, datamodule, space, known=known)
    if s.channel_order == "l1":
        sort_channels(supernet)  # before the ranks get it: every process slices the same channels
    trainer, module = fit_search(cfg, run_dir, logger, lambda world: FMASSearchModule(
        cfg, space, full, supernet, datamodule, facts, started), resume)
    module.prepare_scoring(trainer.strategy.root_device)  # this process's own, to slice the chosen ones
    state, scorer, evaluator = module.state, module.scorer, module.evaluator
    scale = state.extra["scale"]
    cost = objectives[1]
    writer = trainer.is_global_zero  # every rank holds the same state; one writes it
    records = list(state.cache.values())
    front = front_records(records, objectives, scale)
    if not front:
        raise ConfigError("FMAS scored no sub-network within searcher.constraints; loosen them")
    estimated = any(r.get("latency_estimated") for r in front)
    pareto_csv, plot = run_dir / "pareto.csv", run_dir / "pareto.png"
    if writer:
        write_pareto_csv(pareto_csv, front, objectives)
        plot_front(plot, records, front, cost, estimated=estimated)
    chosen = front if s.top_k is None else pick(front, int(s.top_k))  # null: the paper fine-tunes the whole front
    score_keys = ["miou", "params", "macs", "latency_ms", "latency_estimated"]
    # networks in train mode: Lightning keeps the mode a module arrives in
    candidates = [Candidate(genotype=Genotype(space.name, r["genotype"]),
                            network=scorer.prepare(evaluator.subnet(Genotype(space.name, r["genotype"]))).cpu().train(),
                            scores={k: r[k] for k in score_keys if r.get(k) is not None})
                  for r in chosen]
    last = state.history[-1]
    summary = {
        "search_wall_time_s": round(module.wall_time_s, 2),
        "search_steps": state.scored,
        "search_images_seen": module.images_seen,
        **Budget.from_config(cfg).summary(module.budget_stopped),
        "search_algorithm": str(s.get("algorithm", "nsga2")),
        **facts,
        "supernet_genotype_hash": full.hash,
        "supernet_miou": state.extra["supernet_miou"],
        "supernet_macs": int(scale["macs"]),
        "supernet_params": int(scale["params"]),
        "objectives": objectives,
        "recalibrate_bn": bool(s.recalibrate_bn),
        "search_val_protocol": scorer.protocol.describe(),
        "generations": state.generation,
        "candidates_scored": state.scored,
        "cache_hits": state.hits,
        "hypervolume": last["hypervolume"],
        "hypervolume_reference": module.reference,
        # the latency that normalises the latency objective, with its repeats' medians and their range
        "reference_latency": state.extra.get("reference_latency"),
        "front_size": len(front),
        "pareto_csv": str(pareto_csv),
        "pareto_plot": str(plot),
        "latency_estimated": estimated,
        "search_ranks": trainer.world_size,
        "search_device": module.device_name,
        "search_resumed_from": str(resume) if resume else None,
    }

    def on_retrained(entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Mark the fine-tuned front members in pareto.csv, redraw the front before/after, and list
        every front member with its search mIoU (before: inherited weights on the search's validation
        subset) and its fine-tuned mIoU (after: the pipeline's evaluation on the rest of val; null
        when not fine-tuned)."""
        tuned = {e["genotype_hash"]: float(e["val_mIoU"]) for e in entries if e.get("val_mIoU") is not None}
        write_pareto_csv(pareto_csv, front, objectives, tuned)
        plot_front(plot, records, front, cost, tuned, estimated)
        members = [{"genotype_hash": r["genotype_hash"], "search_miou": r["miou"],
                    "finetuned_miou": tuned.get(r["genotype_hash"]),
                    **{k: r[k] for k in ("params", "macs", "latency_ms") if r.get(k) is not None}} for r in front]
        # the fine-tuned members' front, costs normalised and referenced as the search's hypervolume
        # (one reference point for runs on one supernet: task=compare's FMAS and its random baseline)
        finetuned = [{**r, "miou": tuned[r["genotype_hash"]]} for r in front if r["genotype_hash"] in tuned]
        volume = hypervolume(objective_matrix(finetuned, objectives, scale), module.reference) if finetuned else None
        return {"front_finetuned": len(tuned), "front_members": members, "finetuned_hypervolume": volume}

    # the paper scores sub-networks on a val subset: the pipeline reports on the rest of val
    return SearchResult(candidates=candidates, summary=summary, on_retrained=on_retrained,
                        scored_val=datamodule.val_subset(int(s.val_images)).indices)


def _searched_supernet(resume: Path) -> str:
    """The supernet a resumed search sliced (its checkpoint says), so it slices the same weights."""
    try:
        return str(torch.load(resume, map_location="cpu", weights_only=False)[STATE_KEY]["search"]["extra"]["supernet"])
    except (OSError, RuntimeError, KeyError, TypeError) as err:
        raise ConfigError(f"resume={resume}: not an FMAS search checkpoint ({type(err).__name__}: {err}); "
                          "searcher=fmas writes <run_dir>/last.ckpt after every generation") from err


__all__ = ["search"]
