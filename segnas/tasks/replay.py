"""``task=replay replay.table=<task=tabulate run dir>``: the searchers' own search loops run
against a table instead of training or scoring anything, for many seeds in seconds to minutes,
and their anytime curves compared (:mod:`segnas.tables.curves`). FMAS: NSGA-II against uniform
proposals, hypervolume against distinct sub-networks scored; auxcell: the controller (PPO,
REINFORCE) against uniform sampling, best surrogate reward against children sampled. The
searcher's hyperparameters come from ``searcher.*`` (e.g. ``searcher.pop_size``,
``searcher.controller.lr``), so they can be tuned here without touching val."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from segnas.errors import ConfigError
from segnas.report.run_dir import write_config, write_json
from segnas.settings import schema
from segnas.tables import curves, store


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    typed = schema.load(cfg)
    settings, search = typed.replay, typed.searcher  # replay.table was checked with the config
    meta, rows = store.read(settings.table)
    name = meta.get("searcher")
    if search.name != name:
        raise ConfigError(
            f"replay.table={settings.table} tabulates searcher={name}; run the replay with "
            f"searcher={name} (its searcher.* settings drive the replayed search)"
        )
    if name not in ("fmas", "auxcell"):
        raise ConfigError(
            f"replay.table={settings.table} tabulates searcher={name}, which has no replay: the "
            "Auto-DeepLab search descends the supernet's alpha and beta instead of asking a scorer for "
            "architectures (its table.json reports the space's spread and the surrogate's tau)"
        )
    seeds = list(range(settings.first_seed, settings.first_seed + settings.seeds))
    level = settings.level
    write_config(run_dir, cfg)
    if name == "fmas":
        from segnas.tables import fmas

        algorithms = list(settings.algorithms or ["nsga2", "random"])
        evaluations = settings.evaluations or search.pop_size * search.generations
        runs, xs, optimum = fmas.replay(meta, rows, algorithms, seeds, evaluations, search)
        metric, baseline = "hypervolume", "random"
        header = [
            f"# FMAS replay on {settings.table}",
            "",
            f"{len(rows):,} tabulated sub-networks; {len(seeds)} seeds per algorithm; pop_size "
            f"{search.pop_size}; hypervolume of the front of the first n distinct sub-networks scored, "
            f"reference {[1.0] + [search.hv_reference] * (len(meta['objectives']) - 1)} on "
            f"{', '.join(meta['objectives'])} (costs over the full network's); the whole table's front: "
            f"{optimum:.4f}.",
        ]
    else:
        from segnas.tables import auxcell

        algorithms = list(settings.algorithms or ["ppo", "reinforce", "uniform"])
        evaluations = settings.evaluations or search.children
        runs, xs, optimum, fit = auxcell.replay(
            meta, rows, algorithms, seeds, evaluations, search, workers=settings.workers
        )
        metric, baseline = "best surrogate reward", "uniform"
        header = [
            f"# auxcell replay on {settings.table}",
            "",
            f"surrogate fitted on {len(rows)} children (Kendall tau on held-out children "
            f"{fit['kendall_tau']:.3f}); {len(seeds)} seeds per algorithm; best surrogate reward among the "
            f"first n children sampled; the best any architecture can get from the surrogate is unknown, the "
            f"best tabulated child's predicted reward is {optimum:.4f}.",
        ]
    if baseline not in algorithms:
        raise ConfigError(
            f"replay.algorithms={algorithms}: include {baseline}, the baseline every other is read against"
        )
    report = curves.write(
        run_dir, runs, xs, seeds, metric, baseline, header, level, optimum if name == "fmas" else None
    )
    summary = {
        "task": "replay",
        "searcher": name,
        "table": str(settings.table),
        "seeds": len(seeds),
        "algorithms": algorithms,
        "evaluations": evaluations,
        "optimum": optimum,
        **report,
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    write_json(run_dir / "summary.json", summary)
    print(Path(report["replay_md"]).read_text(), flush=True)
    return summary
