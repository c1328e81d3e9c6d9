"""``searcher=random``: random search over any of the three spaces, the baseline a NAS result
must beat at equal budget.

``searcher.space`` picks the space and, with it, the procedure of the matching searcher, whose
settings are composed under ``searcher.<space>`` (``conf/searcher/random.yaml``) so that the
baseline spends what that searcher spends:

- ``autodeeplab``: architectures drawn uniformly (cell and path), each trained from scratch for
  an equal share of the Auto-DeepLab search's steps and scored on its validation images
  (:mod:`.autodeeplab`);
- ``auxcell``: the auxcell search's own child loop with a uniform controller
  (``controller.algorithm=uniform``);
- ``fmas``: the FMAS search with uniform proposals instead of NSGA-II (``algorithm=random``),
  as many per generation, scored the same way.

The last two run the matching searcher through its ``_target_`` (no searcher imports another),
with one setting changed; the baseline therefore inherits their resume, logging and budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig

from segnas.searchers.checks.random import matching
from segnas.searchers.result import SearchResult


def search(cfg: DictConfig, run_dir: Path, resume: Path | None, logger: Any) -> SearchResult:
    inner = matching(cfg)
    space = cfg.searcher.space
    if space == "autodeeplab":
        from segnas.searchers.random.autodeeplab import search as sample_and_train

        result = sample_and_train(inner, cfg.searcher, run_dir, resume, logger)
    else:
        result = get_method(str(inner.searcher._target_))(inner, run_dir, resume, logger)
    result.summary["search_random_space"] = space
    return result
