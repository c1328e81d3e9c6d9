"""The tiny searcher's entry: ``search(settings, context) -> SearchResult``."""

from typing import Any

import numpy as np

from segnas.hardware import count_params
from segnas.searchers.contract import SearchContext
from segnas.searchers.result import Candidate, SearchResult
from segnas.spaces import build, get_space
from tests.tiny_searcher.settings import TinySettings

NETWORK = {"filter_multiplier": 2, "aspp_channels": 8, "decoder_channels": 8, "low_level_channels": 4}


def search(settings: TinySettings, context: SearchContext) -> SearchResult:
    context.datamodule.setup("fit")
    rng = np.random.default_rng(context.seed)
    space = get_space("autodeeplab")
    drawn = [space.sample(rng, settings.blocks, settings.layers, **NETWORK) for _ in range(settings.samples)]
    priced = sorted(((count_params(build(g, context.out_channels)), g) for g in drawn), key=lambda pair: pair[0])
    chosen = priced[: settings.top_k]
    calls: list[int] = []

    def on_retrained(entries: list[dict[str, Any]]) -> dict[str, Any]:
        calls.append(len(entries))
        return {"tiny_hook_calls": len(calls), "tiny_retrained": [e["genotype_hash"] for e in entries]}

    return SearchResult(
        candidates=[Candidate(genotype, scores={"params": params}) for params, genotype in chosen],
        summary={
            "search_wall_time_s": 0.0,
            "search_steps": settings.samples,
            "search_images_seen": 0,
            "tiny_datamodule": id(context.datamodule),
        },
        on_retrained=on_retrained,
        scored_val=context.datamodule.val_subset(settings.val_images).indices,
    )
