"""The ``fmas`` searcher's entry for the pipeline (see the package docstring)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.nn.elastic import sort_channels
from segnas.searchers.contract import SearchContext
from segnas.searchers.engine import STATE_KEY, fit_search
from segnas.searchers.fmas.module import FMASSearchModule
from segnas.searchers.fmas.pareto import (
    PARETO_CSV,
    PARETO_PLOT,
    front_records,
    hypervolume,
    objective_matrix,
    pick,
    write_front,
)
from segnas.searchers.fmas.settings import ChannelOrder, FMASSettings, Proposals
from segnas.searchers.fmas.supernet import obtain
from segnas.searchers.result import Candidate, SearchResult
from segnas.spaces import get_space


def search(settings: FMASSettings, context: SearchContext, proposals: Proposals = Proposals.nsga2) -> SearchResult:
    """Obtain the supernet, run NSGA-II over its sub-networks, return the front (or ``top_k`` spread along it).

    ``proposals=Proposals.random`` proposes each generation uniformly instead: FMAS's random
    baseline (``searcher=random searcher.space=fmas`` calls this with it), same budget, scoring,
    cache and front."""
    started = time.monotonic()
    objectives = settings.ordered_objectives
    space = get_space("elastic-deeplabv3plus")
    datamodule, run_dir, resume = context.datamodule, context.run_dir, context.resume
    datamodule.setup("fit")
    val = len(datamodule.source("val"))
    if settings.val_images >= val:  # before the supernet trains: the report needs val images the search never scored
        raise ConfigError(
            f"searcher.val_images={settings.val_images}: the search would score candidates on all {val} "
            "val images and leave none to report the result on (the pipeline reports on the rest of "
            f"val); use at most {val - 1}"
        )
    known = _searched_supernet(resume) if resume is not None else None
    full, supernet, facts = obtain(settings, context, space, known=known)
    if settings.channel_order == ChannelOrder.l1:
        sort_channels(supernet)  # before the ranks get it: every process slices the same channels
    target = context.hardware if settings.needs_latency() else None
    trainer, module = fit_search(
        context,
        lambda world: FMASSearchModule(
            settings,
            space,
            full,
            supernet,
            datamodule,
            facts,
            protocol=context.protocol,
            input_size=settings.priced_size(context.crop_size),
            target=target,
            proposals=proposals,
            started_at=started,
        ),
    )
    if module.evaluator is None:  # the search ran in spawned ranks (ddp_spawn): this process scores with its own
        module.prepare_scoring(trainer.strategy.root_device)
    state, scorer, evaluator = module.state, module.scorer, module.evaluator
    scale = state.extra["scale"]
    records = list(state.cache.values())
    front = front_records(records, objectives, scale)
    if not front:
        raise ConfigError("FMAS scored no sub-network within searcher.constraints; loosen them")
    if trainer.is_global_zero:  # every rank holds the same state; one writes it
        write_front(run_dir, records, front, objectives)
    # top_k=null: the paper fine-tunes the whole front
    chosen = front if settings.top_k is None else pick(front, settings.top_k)
    score_keys = ["miou", "miou_int8", "params", "macs", "latency_ms", "latency_estimated"]
    # networks in train mode: Lightning keeps the mode a module arrives in
    candidates = [
        Candidate(
            genotype=Genotype(space.name, r["genotype"]),
            network=scorer.prepare(evaluator.subnet(Genotype(space.name, r["genotype"]))).cpu().train(),
            scores={k: r[k] for k in score_keys if r.get(k) is not None},
        )
        for r in chosen
    ]
    last = state.history[-1]
    summary = {
        "search_wall_time_s": round(module.wall_time_s, 2),
        "search_steps": state.scored,
        "search_images_seen": module.images_seen,
        **context.budget.summary(module.budget_stopped),
        "search_algorithm": str(proposals),
        **facts,
        "supernet_genotype_hash": full.hash,
        "supernet_miou": state.extra["supernet_miou"],
        **({"supernet_miou_int8": state.extra["supernet_miou_int8"]} if settings.needs_int8() else {}),
        "supernet_macs": int(scale["macs"]),
        "supernet_params": int(scale["params"]),
        "objectives": objectives,
        "recalibrate_bn": settings.recalibrate_bn,
        "search_val_protocol": scorer.protocol.describe(),
        "generations": state.generation,
        "candidates_scored": state.scored,
        "cache_hits": state.hits,
        "hypervolume": last["hypervolume"],
        "hypervolume_reference": module.reference,
        # the latency that normalises the latency objective, with its repeats' medians and their range
        "reference_latency": state.extra.get("reference_latency"),
        "front_size": len(front),
        "pareto_csv": str(run_dir / PARETO_CSV),
        "pareto_plot": str(run_dir / PARETO_PLOT),
        "latency_estimated": any(r.get("latency_estimated") for r in front),
        "search_ranks": trainer.world_size,
        "search_device": module.device_name,
        "search_resumed_from": str(resume) if resume else None,
    }

    def on_retrained(entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Mark the fine-tuned front members in pareto.csv, redraw the front before/after, and list
        every front member with its search mIoU (before: inherited weights on the search's validation
        subset; float32, and int8 when searched on) and its fine-tuned mIoU (after: the pipeline's
        float32 evaluation on the rest of val; null when not fine-tuned)."""
        tuned = {e["genotype_hash"]: float(e["val_mIoU"]) for e in entries if e.get("val_mIoU") is not None}
        write_front(run_dir, records, front, objectives, tuned)
        members = [
            {
                "genotype_hash": r["genotype_hash"],
                "search_miou": r["miou"],
                **({"search_miou_int8": r["miou_int8"]} if settings.needs_int8() else {}),
                "finetuned_miou": tuned.get(r["genotype_hash"]),
                **{k: r[k] for k in ("params", "macs", "latency_ms") if r.get(k) is not None},
            }
            for r in front
        ]
        # the fine-tuned members' front, costs normalised and referenced as the search's hypervolume
        # (one reference point for runs on one supernet: task=compare's FMAS and its random baseline);
        # none on int8 mIoU: the pipeline scores fine-tuned members in float32 (it quantizes the winner alone)
        finetuned = [{**r, "miou": tuned[r["genotype_hash"]]} for r in front if r["genotype_hash"] in tuned]
        volume = (
            hypervolume(objective_matrix(finetuned, objectives, scale), module.reference)
            if finetuned and not settings.needs_int8()
            else None
        )
        return {"front_finetuned": len(tuned), "front_members": members, "finetuned_hypervolume": volume}

    # the paper scores sub-networks on a val subset: the pipeline reports on the rest of val
    return SearchResult(
        candidates=candidates,
        summary=summary,
        on_retrained=on_retrained,
        scored_val=datamodule.val_subset(settings.val_images).indices,
        finetune=settings.finetune,
    )


def _searched_supernet(resume: Path) -> str:
    """The supernet a resumed search sliced (its checkpoint says), so it slices the same weights."""
    try:
        return str(torch.load(resume, map_location="cpu", weights_only=False)[STATE_KEY]["search"]["extra"]["supernet"])
    except (OSError, RuntimeError, KeyError, TypeError) as err:
        raise ConfigError(
            f"resume={resume}: not an FMAS search checkpoint ({type(err).__name__}: {err}); "
            "searcher=fmas writes <run_dir>/last.ckpt after every generation"
        ) from err


__all__ = ["search"]
