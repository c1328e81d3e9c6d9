"""The ``random`` searcher's entry for the pipeline (see the package docstring)."""

from __future__ import annotations

import dataclasses

from segnas.searchers.auxcell.settings import Policy
from segnas.searchers.contract import SearchContext
from segnas.searchers.fmas.settings import Proposals
from segnas.searchers.random.settings import RandomSettings, Space
from segnas.searchers.registry import registration
from segnas.searchers.result import SearchResult


def search(settings: RandomSettings, context: SearchContext) -> SearchResult:
    """Random search of ``settings.space`` with the matching searcher's settings
    (``settings.<space>``): the Auto-DeepLab space's own sample-and-train loop, the auxcell child
    loop under a uniform controller, or FMAS's generations proposed uniformly."""
    if settings.space == Space.autodeeplab:
        from segnas.searchers.random.autodeeplab import search as sample_and_train

        result = sample_and_train(settings.autodeeplab, context, settings.samples, settings.top_k)
    elif settings.space == Space.auxcell:
        uniform = dataclasses.replace(
            settings.auxcell, controller=dataclasses.replace(settings.auxcell.controller, algorithm=Policy.uniform)
        )
        result = registration("auxcell").search()(uniform, context)
    else:
        result = registration("fmas").search()(settings.fmas, context, proposals=Proposals.random)
    result.summary["search_random_space"] = str(settings.space)
    return result
