"""``task=tabulate``: a search-strategy benchmark table of the ``searcher=`` space (NAS-Bench's
idea on segnas's spaces), written to ``table.csv`` / ``table.json`` in the run directory for
``task=replay``. FMAS: every sub-network of a reduced space scored once by the search's own
evaluator (:mod:`segnas.tables.fmas`); auxcell: children trained by the search's own child loop
under a uniform controller, and a surrogate fitted on them (:mod:`segnas.tables.auxcell`);
autodeeplab: architectures of the discrete space trained by random search's own loop at one
fidelity, and a surrogate (:mod:`segnas.tables.autodeeplab`).
``resume=true`` (same ``hydra.run.dir``) continues a table that stopped.

Each table module's ``tabulate(settings, tabulate, context)`` takes the searcher's typed settings,
``tabulate.*`` and the :class:`~segnas.searchers.contract.SearchContext` a search would get."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas.errors import ConfigError
from segnas.report.loggers import build_logger
from segnas.report.run_dir import write_config
from segnas.settings import schema
from segnas.tables.store import META
from segnas.tasks.search import context
from segnas.tasks.summary import finish

#: Searchers with a table, and the module that tabulates each.
TABLES = {"fmas": "segnas.tables.fmas", "auxcell": "segnas.tables.auxcell", "autodeeplab": "segnas.tables.autodeeplab"}


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    settings = schema.load(cfg)
    run_dir = Path(cfg.run_dir).resolve()
    name = settings.searcher.name
    if name not in TABLES:
        raise ConfigError(f"task=tabulate searcher={name}: tables exist for {', '.join(TABLES)}")
    resuming = str(cfg.get("resume")).lower() == "true"
    if (run_dir / META).is_file() and not resuming:
        raise ConfigError(
            f"run directory {run_dir} already holds a table ({META}); pass resume=true to continue it, "
            "or choose another hydra.run.dir"
        )
    write_config(run_dir, cfg)
    logger = build_logger(cfg.get("logger"), run_dir)
    # the searcher's own loop tabulates, handed the run as a search would be (resume: the table's own files)
    handed = context(cfg, settings, run_dir, None, logger, instantiate(cfg.data))
    summary = {
        "task": "tabulate",
        "searcher": name,
        "data": cfg.data.get("name"),
        "seed": settings.seed,
        **importlib.import_module(TABLES[name]).tabulate(settings.searcher, settings.tabulate, handed),
    }
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    return finish(run_dir, summary, logger)
