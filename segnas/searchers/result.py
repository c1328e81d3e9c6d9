"""What a searcher hands back to the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from segnas.genotype import Genotype
from segnas.searchers.contract import FinetuneSettings


@dataclass
class Candidate:
    """An architecture the search recommends for retraining.

    ``network`` carries initial weights when the search has them worth keeping (FMAS's sliced
    sub-networks are fine-tuned, not trained anew); ``None`` means retrain from scratch.
    ``scores`` is what the search measured for it (proxy mIoU, reward, MACs...), kept next to
    the retrained scores in ``summary.json`` so the two can be compared.
    """

    genotype: Genotype
    network: nn.Module | None = None
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """Candidates ranked best first, and the search's own facts for ``summary.json``.

    ``summary`` should report the compute spent (``search_wall_time_s``, ``search_steps``,
    ``search_images_seen``) so searchers can be compared at equal budget. ``on_retrained``, when
    given, receives one dict per retrained candidate (its genotype hash, search and retrained
    scores) after retraining, e.g. to redraw a Pareto front; what it returns joins the summary.
    ``scored_val`` lists the val images the search chose by (FMAS's validation subset, the
    paper's protocol): the pipeline reports the result on the rest of val. ``finetune`` is how
    candidates that arrive with weights are fine-tuned (None: with train.*, as from scratch).
    """

    candidates: list[Candidate]
    summary: dict[str, Any] = field(default_factory=dict)
    on_retrained: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    scored_val: list[int] | None = None
    finetune: FinetuneSettings | None = None
