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
from omegaconf import DictConfig, OmegaConf

from segnas.errors import ConfigError
from segnas.searchers.result import SearchResult

SPACES = ("autodeeplab", "auxcell", "fmas")
#: The one setting that turns the matching searcher into random search.
UNIFORM = {"auxcell": {"controller": {"algorithm": "uniform"}}, "fmas": {"algorithm": "random"}}


def matching(cfg: DictConfig) -> DictConfig:
    """The run's config with ``searcher`` replaced by the matching searcher's (random) settings."""
    space = cfg.searcher.get("space")
    if space not in SPACES:
        raise ConfigError(f"searcher.space={space}: expected one of {', '.join(SPACES)}")
    settings = cfg.searcher.get(space)
    if settings is None:
        raise ConfigError(f"searcher.{space} is missing: searcher=random composes the {space} searcher's "
                          "settings there (conf/searcher/random.yaml)")
    inner = OmegaConf.to_container(cfg, resolve=True)
    inner["searcher"] = OmegaConf.to_container(OmegaConf.merge(settings, UNIFORM.get(space, {})), resolve=True)
    return OmegaConf.create(inner)


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
