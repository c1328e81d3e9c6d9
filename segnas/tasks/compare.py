"""``task=compare``: every chosen searcher and its random baseline on one data / hardware /
budget setting, over several seeds, each winner retrained with one shared schedule.

Each (searcher, seed) is an ordinary ``task=search`` run in ``<run_dir>/runs/<label>_seed<k>/``
with its own ``summary.json``, config and W&B run (all in one W&B group), so a comparison can
also be assembled from runs started elsewhere: ``compare.gather=<folder>`` reads every search
run under a folder (a Hydra multirun, local or through submitit) instead of running anything.
The tables and the plot come from :mod:`segnas.report.comparison`.

Every run's composed config is checked before the first run starts, so a config mistake in
any of them stops the comparison before anything has run. A run that fails is recorded as
failed and the others go on; re-running the comparison with
``resume=true`` (in the same ``hydra.run.dir``) keeps finished runs and continues unfinished ones.

Every run's ``summary.json`` carries its winner quantized to int8 as ``task=quantize`` does, with the
comparison's ``quantize.*`` (``quantize.in_summary``), so the tables pair int8 mIoU and latency too.

``compare.baselines`` adds hand-designed networks (presets: DeepLabV3+-MobileNetV2, LR-ASPP on
MobileNetV3-Large) trained as ``task=train`` runs with the winners' schedule and epochs and
scored the same way, so every comparison also answers whether any search beat simply training
the usual compact network.

FMAS and its random baseline search the same supernet: the baseline of a seed slices the one its
FMAS run trained (or loaded), so the comparison is between the two search procedures and not
between two supernets (issue 13, item 21). If that FMAS run failed, the baseline trains its own
and says so in the log.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from segnas.config_checks import check_config
from segnas.errors import ConfigError, SegnasError
from segnas.report import comparison
from segnas.report.loggers import close_loggers
from segnas.report.run_dir import resume_checkpoint, write_config, write_json
from segnas.tasks import search, train

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
RANDOM = "random"
BASELINE = "baseline"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run (or gather) the comparison and write comparison.csv / .md / .png and summary.json."""
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    settings = cfg.compare
    if settings.get("gather"):
        folders = [Path(str(f)) for f in (settings.gather if OmegaConf.is_list(settings.gather) else [settings.gather])]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise ConfigError(f"compare.gather={', '.join(missing)}: not a folder")
        write_config(run_dir, cfg)
        runs = [r for folder in folders for r in comparison.gather(folder)]
        if not runs:
            raise ConfigError(
                f"compare.gather={', '.join(map(str, folders))}: no task=search run "
                "(summary.json with task: search) under it"
            )
    else:
        if not cfg.get("resume"):
            resume_checkpoint(run_dir, None)  # refuses a folder that already holds a comparison
        planned = [
            (label, seed, _sub_config(cfg, run_dir / "runs", label, searcher, seed))
            for seed in _seeds(settings)
            for label, searcher in plan(settings)
        ]
        planned += [
            (f"{BASELINE}-{preset}", seed, _baseline_config(cfg, run_dir / "runs", preset, seed))
            for seed in _seeds(settings)
            for preset in baselines(settings)
        ]
        for _, _, sub in planned:  # every run's config, before the first one starts
            check_config(sub)
        write_config(run_dir, cfg)
        runs, supernets = [], {}
        for label, seed, sub in planned:
            if label == f"{RANDOM}-fmas":
                _share_supernet(sub, supernets.get(seed), seed)
            runs.append(_run_one(label, seed, sub))
            if label == "fmas" and runs[-1].get("summary", {}).get("supernet"):
                supernets[seed] = str(runs[-1]["summary"]["supernet"])
    rows = comparison.rows(runs)
    outputs = comparison.write(run_dir, rows, command=_command(cfg))
    summary = {
        "task": "compare",
        "runs": len(rows),
        "failed": sum(r["status"] != "ok" for r in rows),
        **{key: str(path) for key, path in outputs.items()},
        "wall_time_s": round(time.perf_counter() - start, 2),
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "summary.json", summary)
    print((run_dir / "comparison.md").read_text(), flush=True)
    return summary


def plan(settings: DictConfig) -> list[tuple[str, str]]:
    """(label, searcher config name) pairs: each searcher, then its random baseline."""
    searchers = [str(s) for s in settings.searchers]
    if not searchers:
        raise ConfigError("compare.searchers is empty: name at least one of autodeeplab, auxcell, fmas")
    unknown = [s for s in searchers if s not in ("autodeeplab", "auxcell", "fmas")]
    if unknown:
        raise ConfigError(
            f"compare.searchers: {unknown} are not searchers with a random baseline; "
            "expected autodeeplab, auxcell or fmas"
        )
    pairs = []
    for name in searchers:
        pairs.append((name, name))
        if settings.random_baselines:
            pairs.append((f"{RANDOM}-{name}", name))
    return pairs


def baselines(settings: DictConfig) -> list[str]:
    """``compare.baselines``: hand-designed presets trained like the winners (every one a preset)."""
    names = [str(b) for b in (settings.get("baselines") or [])]
    from segnas import spaces  # the preset list (imports timm): only when there are baselines

    unknown = [b for b in names if b not in spaces.presets()]
    if unknown:
        raise ConfigError(
            f"compare.baselines: {unknown} are not presets; e.g. deeplabv3plus-mobilenetv2, lraspp-mobilenetv3-large"
        )
    return names


def _baseline_config(cfg: DictConfig, runs_dir: Path, preset: str, seed: int) -> DictConfig:
    """The ``task=train`` config of a hand-designed baseline: the winners' data, hardware,
    schedule and epochs (``compare.retrain_epochs``), seed, and ``compare.baseline_backbone_weights``."""
    sub = _run_config(cfg, runs_dir, f"{BASELINE}-{preset}", seed, "train")
    with open_dict(sub):
        sub.arch = preset
        sub.trainer.max_epochs = int(cfg.compare.retrain_epochs)
        sub.model.backbone_weights = cfg.compare.get("baseline_backbone_weights")
    return sub


def _seeds(settings: DictConfig) -> list[int]:
    seeds = list(settings.seeds)
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"compare.seeds={seeds}: expected a non-empty list of integers")
    return seeds


def searcher_config(label: str, name: str, overrides: list[str], random_overrides: list[str]) -> DictConfig:
    """The ``searcher`` node for one entry, composed from conf/searcher/ with the comparison's
    overrides for that searcher; a random baseline gets the same overrides under
    ``searcher.<name>.*``, so it runs the matching searcher's exact settings, plus its own
    (``compare.random_overrides``, e.g. ``searcher.samples=8``)."""
    if label.startswith(f"{RANDOM}-"):
        overrides = [f"searcher.{name}.{o.removeprefix('searcher.')}" for o in overrides]
        overrides = ["searcher=random", f"searcher.space={name}", *overrides, *random_overrides]
    else:
        overrides = [f"searcher={name}", *overrides]
    try:
        if GlobalHydra.instance().is_initialized():  # inside @hydra.main: the same config tree
            return compose("config", overrides=overrides).searcher
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=overrides).searcher
    except Exception as err:
        raise ConfigError(f"compare.overrides.{name}={overrides}: {err}") from err


def _run_config(cfg: DictConfig, runs_dir: Path, label: str, seed: int, task: str) -> DictConfig:
    """What every run of the comparison shares: this config without ``compare``, as ``task`` in
    ``runs_dir/<label>_seed<seed>`` (resumed when it holds a checkpoint), in the comparison's W&B
    group."""
    run_dir = runs_dir / f"{label}_seed{seed}"
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(sub):
        sub.task = task
        sub.seed = seed
        sub.run_dir = str(run_dir)
        sub.resume = True if (run_dir / "last.ckpt").is_file() else None
        sub.pop("compare")
        if sub.get("logger") is not None and "group" in sub.logger:
            sub.logger.group = cfg.compare.group or f"compare-{Path(cfg.run_dir).name}"
            sub.logger.name = f"{label}-seed{seed}"
    return sub


def _sub_config(cfg: DictConfig, runs_dir: Path, label: str, name: str, seed: int) -> DictConfig:
    """The ``task=search`` config of one run in ``runs_dir/<label>_seed<seed>``."""
    overrides = [str(o) for o in (cfg.compare.overrides or {}).get(name, [])]
    sub = _run_config(cfg, runs_dir, label, seed, "search")
    with open_dict(sub):
        sub.searcher = searcher_config(
            label, name, overrides, [str(o) for o in cfg.compare.get("random_overrides") or []]
        )
        sub.retrain.epochs = int(cfg.compare.retrain_epochs)
    return sub


def _share_supernet(sub: DictConfig, supernet: str | None, seed: int) -> None:
    """Point a random FMAS baseline at the supernet its seed's FMAS run searched (unless the
    comparison already names one for both through ``compare.overrides``)."""
    if sub.searcher.fmas.get("supernet") is not None:
        return
    if supernet is None:
        log.warning("compare: the FMAS run of seed %d left no supernet; its random baseline trains its own", seed)
        return
    log.info("compare: random-fmas seed %d searches the FMAS run's supernet %s", seed, supernet)
    with open_dict(sub):
        sub.searcher.fmas.supernet = supernet


def _run_one(label: str, seed: int, sub: DictConfig) -> dict[str, Any]:
    """One search run; a finished one is read back, a failure is recorded, never raised."""
    run_dir = Path(sub.run_dir)
    record = {"label": label, "seed": seed, "run_dir": run_dir}
    if (run_dir / "summary.json").is_file():
        log.info("compare: %s seed %d already finished in %s", label, seed, run_dir)
        return {**record, "summary": comparison.read_summary(run_dir)}
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("compare: %s seed %d -> %s", label, seed, run_dir)
    # as python -m segnas.run seed=<seed> would: every run's initialisation and sampling follow
    # its seed alone, not what ran before it in this process (same seed: same init, for pairing)
    pl.seed_everything(int(seed), workers=True, verbose=False)
    failed = True
    try:
        summary = train.run(sub) if sub.task == "train" else search.run(sub)
        failed = False
        return {**record, "summary": summary}
    except (SegnasError, RuntimeError, ValueError) as err:  # one broken run must not sink the others
        log.exception("compare: %s seed %d failed", label, seed)
        return {**record, "error": f"{type(err).__name__}: {err}"}
    finally:
        close_loggers(failed)


def _command(cfg: DictConfig) -> str:
    """The command line that reproduces this comparison (Hydra's overrides of this run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return "python -m segnas.run " + " ".join(HydraConfig.get().overrides.task)
    except ValueError:  # not under @hydra.main (a test calling pipeline.run)
        return "python -m segnas.run task=compare"
