"""One validator per searcher: every key of ``conf/searcher/<name>.yaml`` checked (ranges,
types, combinations) before the search loads data, so a config that cannot run fails in about
a second instead of after a supernet has trained.

The validators import only the standard library, omegaconf and :mod:`segnas.config_keys`, never
a searcher package (those pull in torch, Lightning, pymoo...). :func:`check_searcher` is called
by :func:`segnas.config_checks.check_config` with the run's whole config; a searcher whose
``_target_`` is not registered here (a user's own) is not checked. What can only be known with
the data or the process group (the held-out part against the dataset's size, children per round
against the ranks) is still checked where it is known.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from segnas.config_keys import Keys
from segnas.searchers.checks import autodeeplab, auxcell, fmas, random

#: ``searcher._target_`` -> validator(config, keys of the searcher's node).
VALIDATORS: dict[str, Callable[[DictConfig, Keys], None]] = {
    "segnas.searchers.autodeeplab.search": autodeeplab.check,
    "segnas.searchers.auxcell.search": auxcell.check,
    "segnas.searchers.fmas.search": fmas.check,
    "segnas.searchers.random.search": random.check,
}


def check_searcher(cfg: DictConfig) -> None:
    """Run the validator of ``cfg.searcher`` (none for an unregistered ``_target_``)."""
    validator = VALIDATORS.get(str(OmegaConf.select(cfg, "searcher._target_")))
    if validator is not None:
        validator(cfg, Keys(cfg.searcher, "searcher"))
