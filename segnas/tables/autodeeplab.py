"""The Auto-DeepLab discrete-space benchmark table: architectures (a cell and a path) drawn
uniformly, each trained from scratch at one low fidelity and scored on held-out images, and a
surrogate of that score (:mod:`segnas.tables.surrogate`) with its Kendall tau on architectures it
was not fitted on.

Why a surrogate: with B=5 blocks the space holds about 6·10^16 architectures at L=12 (2.6·10^13
at the default L=4), so no table can hold what a search would ask for. The architectures are
random search's own (:func:`segnas.searchers.random.autodeeplab.search`, with every architecture trained for
``tabulate.steps`` steps instead of a share of the supernet search's budget): each row is what a
``searcher=random searcher.space=autodeeplab`` run records, held-out score on trainB (never val).

There is no replay of the Auto-DeepLab search itself: it is a gradient descent on the supernet's
α and β, not a sequence of architectures asked of a scorer. What the table answers is how the
space's scores are spread (how much a search can gain over a random draw) and, with the
surrogate, how far the discrete space can be ranked from its decisions.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segnas.errors import ConfigError, GenotypeError
from segnas.searchers.autodeeplab.settings import AutoDeepLabSettings
from segnas.searchers.contract import SearchContext
from segnas.settings.run import TabulateSettings
from segnas.spaces.autodeeplab import OPS, STRIDES, AutoDeepLabSpace
from segnas.tables import surrogate
from segnas.tables.store import TableWriter, search_run, write_meta

log = logging.getLogger(__name__)

COLUMNS = ("genotype_hash", "genes", "genotype", "holdout_mIoU", "params", "steps", "status", "score_s")
SPACE = AutoDeepLabSpace()


def choices(blocks: int, layers: int) -> list[int]:
    """Values each decision takes: per block (op, input) twice (block b reads one of 2 + b
    states), then the stride level of each layer."""
    per_block = [[len(OPS), 2 + b, len(OPS), 2 + b] for b in range(blocks)]
    return [c for block in per_block for c in block] + [len(STRIDES)] * layers


def genes_of(arch: dict[str, Any]) -> list[int]:
    """The decisions of a genotype's arch, in :func:`choices`' order."""
    genes = []
    for block in arch["cell"]:
        for op, state in block:
            genes += [OPS.index(op), int(state)]
    return genes + [STRIDES.index(int(s)) for s in arch["path"]]


def _architectures_run(
    settings: AutoDeepLabSettings, tabulate: TabulateSettings, context: SearchContext
) -> tuple[Path, dict[str, Any]]:
    """(folder of the random search whose architectures make the table, the network labels its
    genotypes carry): ``tabulate.from_run``, or one run here of ``tabulate.architectures``
    architectures of ``settings``' space into ``<run dir>/architectures`` (continued from its
    last.ckpt when the table is resumed)."""
    given = tabulate.from_run
    if given:
        folder, searcher = search_run(given)
        if searcher.get("name") != "random" or searcher.get("space") != "autodeeplab":
            raise ConfigError(
                f"tabulate.from_run={given}: not a random search of the Auto-DeepLab space "
                "(searcher=random searcher.space=autodeeplab)"
            )
        return folder, dict(searcher["autodeeplab"]["network"])
    from segnas.searchers.random.autodeeplab import search

    folder = context.run_dir / "architectures"
    folder.mkdir(parents=True, exist_ok=True)
    resume = folder / "last.ckpt"
    search(
        settings,
        dataclasses.replace(context, run_dir=folder, resume=resume if resume.is_file() else None),
        samples=tabulate.architectures,
        top_k=1,
        steps=tabulate.steps,
    )
    return folder, dataclasses.asdict(settings.network)


def rows_of(search_csv: Path, labels: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows from a random Auto-DeepLab search.csv: each architecture's decisions,
    genotype and held-out score. The genotype is rebuilt from the ``cell`` and ``path`` columns
    with the run's network ``labels`` and must give the row's ``genotype_hash``."""
    from segnas.searchers.random.autodeeplab import parse_cell

    rows = []
    with search_csv.open(newline="") as handle:
        for line, record in enumerate(csv.DictReader(handle), start=2):
            try:
                genotype = SPACE.genotype(
                    {"cell": parse_cell(record["cell"]), "path": [int(s) for s in record["path"].split()], **labels}
                )
            except (ConfigError, GenotypeError, ValueError) as err:
                raise ConfigError(f"{search_csv}, line {line}: not an Auto-DeepLab architecture ({err})") from err
            if genotype.hash != record["genotype_hash"]:
                raise ConfigError(
                    f"{search_csv}, line {line}: its cell and path give genotype {genotype.hash}, the "
                    f"row says {record['genotype_hash']} (network labels {labels} not this run's?)"
                )
            rows.append(
                {
                    "genotype_hash": genotype.hash,
                    "genes": genes_of(genotype.arch),
                    "genotype": {k: genotype.arch[k] for k in ("cell", "path")},
                    "holdout_mIoU": float(record["holdout_mIoU"]),
                    "params": int(float(record["params"])),
                    "steps": int(record["steps"]),
                    "status": "ok",
                    "score_s": float(record["seconds"]),
                }
            )
    return rows


def fit_surrogate(rows: Sequence[dict[str, Any]], holdout: float, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """(forest on every architecture's decisions, its out-of-fold Kendall tau against the held-out
    mIoU); every row must have the same blocks and layers."""
    shapes = {(len(r["genotype"]["cell"]), len(r["genotype"]["path"])) for r in rows}
    if len(shapes) != 1:
        raise ConfigError(f"the table mixes (blocks, layers) {sorted(shapes)}: one space per table")
    ((blocks, layers),) = shapes
    return surrogate.fit(
        [r["genes"] for r in rows], [r["holdout_mIoU"] for r in rows], choices(blocks, layers), holdout, seed
    )


def tabulate(settings: AutoDeepLabSettings, tabulate: TabulateSettings, context: SearchContext) -> dict[str, Any]:
    """Architectures into ``table.csv`` in the run directory; the surrogate's fit into ``table.json``."""
    start = time.perf_counter()
    run_dir = context.run_dir
    folder, labels = _architectures_run(settings, tabulate, context)
    rows = rows_of(folder / "search.csv", labels)
    writer = TableWriter(run_dir, COLUMNS)
    done = writer.done()
    writer.append(r for r in rows if r["genotype_hash"] not in done)
    _, fit = fit_surrogate(writer.rows, tabulate.surrogate_holdout, context.seed)
    log.info(
        "surrogate: Kendall tau %.3f (%d %% CI %.3f-%.3f) on out-of-fold predictions of %d architectures",
        fit["kendall_tau"],
        round(100 * fit["level"]),
        *fit["tau_ci"],
        fit["n"],
    )
    scores = np.array([r["holdout_mIoU"] for r in writer.rows])
    first = writer.rows[0]["genotype"]
    meta = {
        "searcher": "autodeeplab",
        "space": SPACE.name,
        "full": None,
        "settings": {
            "blocks": len(first["cell"]),
            "layers": len(first["path"]),
            "network": labels,
            "steps": sorted({int(r["steps"]) for r in writer.rows}),
        },
        "supernet": None,
        "architectures_run": str(folder),
        "surrogate": fit,
        "architectures": len(writer.rows),
        "score_s_median": float(np.median([r["score_s"] for r in writer.rows])),
        "holdout_mIoU": {
            "best": float(scores.max()),
            "median": float(np.median(scores)),
            "p90": float(np.percentile(scores, 90)),
            "worst": float(scores.min()),
        },
        "tabulate_wall_time_s": round(time.perf_counter() - start, 2),
    }
    write_meta(run_dir, meta)
    return {"table": str(writer.path), **{k: v for k, v in meta.items() if k not in ("settings", "full", "supernet")}}
