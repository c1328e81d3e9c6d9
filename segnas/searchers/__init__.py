"""How to search a space.

Each searcher is a module with a ``search(cfg, run_dir, resume, logger) -> SearchResult``
function (``resume``: the checkpoint to continue from, or None; ``logger``: the run's Lightning
logger, shared with retraining so one W&B run holds both), named by
``searcher._target_`` in ``conf/searcher/<name>.yaml``; every other key of that file is the
searcher's own. The pipeline calls it, saves the winner's genotype, retrains (or fine-tunes) the
returned candidates with the shared training module and evaluates them. A searcher never imports
another searcher.
"""

from segnas.searchers.result import Candidate, SearchResult

__all__ = ["Candidate", "SearchResult"]
