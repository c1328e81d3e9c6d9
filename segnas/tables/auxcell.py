"""The auxcell benchmark table: children trained at the search's own (low) fidelity, sampled
uniformly, and a surrogate of their reward for replays of the controller.

Why a surrogate: the space has about 10^16 decoders (19 decisions), so no table can hold what a
controller will ask for; a regressor fitted on a few hundred children answers every question, and
its Kendall tau on children it was not fitted on says how far a replay's ranking can be believed
(NAS-Bench-301's approach). The children are the search's own
(:func:`segnas.searchers.auxcell.searcher.search` with ``searcher.controller.algorithm=uniform``
and early stopping off, so every child has both stages' rewards): each row is what a real search
would have recorded for that decoder.

The surrogate is :mod:`segnas.tables.surrogate`'s random forest on the one-hot decisions (ops,
positions, connections), its tau measured on out-of-fold predictions (k = 1 /
``tabulate.surrogate_holdout``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segnas.errors import ConfigError
from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.lockstep import Lockstep
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.settings import AuxCellSettings, ControllerSettings, Policy, Positions
from segnas.searchers.contract import SearchContext
from segnas.settings.run import TabulateSettings
from segnas.spaces.auxcell import AuxCellSpace, from_encoding
from segnas.tables import surrogate
from segnas.tables.store import TableWriter, search_run, write_meta

log = logging.getLogger(__name__)

COLUMNS = (
    "genotype_hash",
    "genes",
    "genotype",
    "reward",
    "stage1_reward",
    "stage2_reward",
    "mIoU",
    "params",
    "status",
    "score_s",
)


def _children_run(settings: AuxCellSettings, tabulate: TabulateSettings, context: SearchContext) -> Path:
    """The uniform search whose children make the table: ``tabulate.from_run``, or one run here
    of ``tabulate.children`` children into ``<run dir>/children`` (continued from its last.ckpt
    when the table is resumed)."""
    given = tabulate.from_run
    if given:
        folder, searcher = search_run(given)
        if (
            searcher.get("name") not in ("auxcell", "random")
            or searcher.get("controller", {}).get("algorithm") != "uniform"
            or searcher.get("early_stopping", {}).get("enabled", True)
        ):
            raise ConfigError(
                f"tabulate.from_run={given}: its children were not sampled uniformly without early "
                "stopping (searcher.controller.algorithm=uniform searcher.early_stopping.enabled=false)"
            )
        return folder
    from segnas.searchers.auxcell.searcher import search

    folder = context.run_dir / "children"
    folder.mkdir(parents=True, exist_ok=True)
    uniform = dataclasses.replace(
        settings,
        children=tabulate.children,
        top_k=1,
        controller=dataclasses.replace(settings.controller, algorithm=Policy.uniform),
        early_stopping=dataclasses.replace(settings.early_stopping, enabled=False),
    )
    resume = folder / "last.ckpt"
    search(uniform, dataclasses.replace(context, run_dir=folder, resume=resume if resume.is_file() else None))
    return folder


def rows_of(search_csv: Path, positions: Positions) -> list[dict[str, Any]]:
    """The table's rows from a search.csv: each child's decisions, arch and rewards (children
    that failed are left out: their reward is the failure's, not the decoder's)."""
    space = AuxCellSpace()
    rows = []
    with search_csv.open(newline="") as handle:
        for record in csv.DictReader(handle):
            if record["status"] not in ("ok", "stage2_failed"):
                continue
            arch = space.validate(from_encoding(json.loads(record["encoding"])))
            genes = decisions.from_arch(arch)
            if len(genes) != len(decisions.choices(positions)):
                raise ConfigError(f"{search_csv}: child {record['child']} is not in the {positions} space")
            rows.append(
                {
                    "genotype_hash": record["genotype_hash"],
                    "genes": genes,
                    "genotype": {k: arch[k] for k in ("cell", "connections")},
                    **{
                        key: float(record[key]) if record.get(key) not in (None, "") else None
                        for key in ("reward", "stage1_reward", "stage2_reward", "mIoU")
                    },
                    "params": int(float(record["params"])),
                    "status": record["status"],
                    "score_s": float(record["child_s"]) if record.get("child_s") else None,
                }
            )
    return rows


def fit_surrogate(
    rows: Sequence[dict[str, Any]], choices: Sequence[int], holdout: float, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """(forest fitted on every child's decisions, its out-of-fold Kendall tau against the rewards)."""
    return surrogate.fit([r["genes"] for r in rows], [r["reward"] for r in rows], choices, holdout, seed)


def tabulate(settings: AuxCellSettings, tabulate: TabulateSettings, context: SearchContext) -> dict[str, Any]:
    """Children into ``table.csv`` in the run directory; the surrogate's fit into ``table.json``."""
    start = time.perf_counter()
    run_dir = context.run_dir
    positions = settings.controller.positions
    folder = _children_run(settings, tabulate, context)
    rows = rows_of(folder / "search.csv", positions)
    writer = TableWriter(run_dir, COLUMNS)
    done = writer.done()
    writer.append(r for r in rows if r["genotype_hash"] not in done)
    choices = decisions.choices(positions)
    _, fit = fit_surrogate(writer.rows, choices, tabulate.surrogate_holdout, context.seed)
    log.info(
        "surrogate: Kendall tau %.3f (%d %% CI %.3f-%.3f) on out-of-fold predictions of %d children",
        fit["kendall_tau"],
        round(100 * fit["level"]),
        *fit["tau_ci"],
        fit["n"],
    )
    meta = {
        "searcher": "auxcell",
        "space": AuxCellSpace.name,
        "full": None,
        "settings": {"positions": positions.value, "choices": choices},
        "supernet": None,
        "children_run": str(folder),
        "surrogate": fit,
        "architectures": len(writer.rows),
        "score_s_median": float(np.median([r["score_s"] for r in writer.rows if r["score_s"] is not None])),
        "best_reward": max(r["reward"] for r in writer.rows),
        "tabulate_wall_time_s": round(time.perf_counter() - start, 2),
    }
    write_meta(run_dir, meta)
    return {"table": str(writer.path), **{k: v for k, v in meta.items() if k not in ("settings", "full", "supernet")}}


# seeds whose controllers are updated as one (:mod:`segnas.searchers.auxcell.lockstep`): a stack
# of 50 updates each seed several times faster than one seed alone; more seeds per stack gain
# little, their weights outgrowing the caches (BENCHMARKS.md, "auxcell controller updates")
LOCKSTEP_SEEDS = 50


def _replay_seeds(
    algorithm: Policy,
    seeds: Sequence[int],
    children: int,
    choices: Sequence[int],
    settings: ControllerSettings,
    forest: Any,
) -> np.ndarray:
    """(seeds, children) best surrogate reward so far: each seed's own controller and policy (built
    as :class:`~segnas.searchers.auxcell.module.AuxCellSearchModule` builds them, from the search's
    controller settings and the seed) samples a child, gets the surrogate's reward and learns from
    it; the seeds run in lockstep, one child each per step, so one surrogate call and one stacked
    update serve them all."""
    policies, samplers = [], []
    for seed in seeds:
        controller = Controller(choices, settings.hidden_size, settings.num_layers, seed=seed)
        policies.append(build_policy(algorithm, controller, settings, seed=seed))
        samplers.append(torch.Generator().manual_seed(seed))
    together = Lockstep(policies)
    values = np.zeros((len(seeds), children))
    for child in range(children):
        drawn = [policy.sample(sampler)[:2] for policy, sampler in zip(policies, samplers)]
        rewards = forest.predict(surrogate.features(np.array([actions for actions, _ in drawn]), choices))
        together.update(
            [actions for actions, _ in drawn], [log_prob for _, log_prob in drawn], [float(r) for r in rewards]
        )
        values[:, child] = rewards if child == 0 else np.maximum(values[:, child - 1], rewards)
    return values


def replay(
    meta: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    algorithms: Sequence[str],
    seeds: Sequence[int],
    children: int,
    settings: AuxCellSettings,
    workers: int | None = 1,
    stack: int = LOCKSTEP_SEEDS,
) -> tuple[dict[str, np.ndarray], list[int], float, dict[str, Any]]:
    """Best surrogate reward among the first n children, n = 1..children, per algorithm and seed.

    Each run is the search's own controller and policy learning child after child
    (:func:`_replay_seeds`): only the child's training is swapped for the surrogate. The seeds go
    in stacks of ``stack`` to ``workers`` processes (None: one per usable CPU core), one thread
    each; a stack's runs do not depend on which process ran it. Returns the curves, their x
    values, the surrogate's best prediction among the tabulated children and the surrogate's fit."""
    controller = settings.controller
    positions = meta["settings"]["positions"]
    if positions != controller.positions:
        raise ConfigError(
            f"replay: the table was tabulated with searcher.controller.positions={positions}, this "
            f"replay has {controller.positions}"
        )
    unknown = [name for name in algorithms if name not in Policy.__members__]
    if unknown:
        raise ConfigError(f"replay.algorithms={list(algorithms)}: expected names from {', '.join(Policy)}")
    choices = decisions.choices(controller.positions)
    forest, fit = fit_surrogate(rows, choices, 1.0 / int(meta["surrogate"]["folds"]))
    best_tabulated = float(forest.predict(surrogate.features(np.array([r["genes"] for r in rows]), choices)).max())
    jobs = [(name, list(seeds[first : first + stack])) for name in algorithms for first in range(0, len(seeds), stack)]
    workers = min(len(jobs), workers or len(os.sched_getaffinity(0)))
    arguments = [(Policy(name), chunk, children, choices, controller, forest) for name, chunk in jobs]
    start = time.perf_counter()

    def logged(outcomes: Iterator[np.ndarray]) -> list[np.ndarray]:
        done = []
        for (name, chunk), values in zip(jobs, outcomes):
            done.append(values)
            log.info(
                "replay: %s, seeds %d-%d done (%d/%d stacks, %.0f s)",
                name,
                chunk[0],
                chunk[-1],
                len(done),
                len(jobs),
                time.perf_counter() - start,
            )
        return done

    if workers > 1:
        # spawned, not forked: a forked child of a process whose OpenMP pool is running can hang
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            results = logged(pool.map(_replay_seeds, *zip(*arguments)))
    else:
        results = logged(_replay_seeds(*job) for job in arguments)
    curves = {
        name: np.concatenate([r for (job_name, _), r in zip(jobs, results) if job_name == name]) for name in algorithms
    }
    return curves, list(range(1, children + 1)), best_tabulated, fit
