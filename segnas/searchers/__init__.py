"""How to search a space.

Each searcher is a module with a ``search(cfg, run_dir, resume, logger) -> SearchResult``
function (``resume``: the checkpoint to continue from, or None; ``logger``: the run's Lightning
logger, shared with retraining so one W&B run holds both), named by
``searcher._target_`` in ``conf/searcher/<name>.yaml``; every other key of that file is the
searcher's own. The pipeline calls it, saves the winner's genotype, retrains (or fine-tunes) the
returned candidates with the shared training module and evaluates them. A searcher never imports
another searcher.

Each searcher's keys are checked before it runs by its validator in :mod:`.checks`, which the
config checks import; so this package imports nothing heavy itself, and ``Candidate`` /
``SearchResult`` (torch) load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Candidate", "SearchResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from segnas.searchers import result

        return getattr(result, name)
    raise AttributeError(f"module 'segnas.searchers' has no attribute {name!r}")
