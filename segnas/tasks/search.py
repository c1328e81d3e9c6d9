"""``task=search``: run ``searcher=<name>``, save the winner's genotype, retrain every candidate
the searcher returns for ``retrain.epochs`` and keep the best as ``model.pt`` / ``model.onnx``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from segnas import spaces, targets
from segnas.errors import ConfigError
from segnas.report.loggers import build_logger
from segnas.report.run_dir import resume_checkpoint, write_config
from segnas.searchers import Candidate
from segnas.tasks.fitting import fit, weights
from segnas.tasks.summary import architecture, finish


def run(cfg: DictConfig) -> dict[str, Any]:
    """Search, save the winner's genotype, retrain every returned candidate, keep the best."""
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    target = OmegaConf.select(cfg, "searcher._target_")
    if not target:
        raise ConfigError("task=search needs searcher=<name> (conf/searcher/): e.g. searcher=autodeeplab")
    try:
        search = get_method(str(target))
    except Exception as err:
        raise ConfigError(f"searcher._target_={target}: cannot be imported ({err})") from err
    checkpoint = resume_checkpoint(run_dir, cfg.get("resume"))
    write_config(run_dir, cfg)
    logger = build_logger(cfg.get("logger"), run_dir)
    result = search(cfg, run_dir, checkpoint, logger)
    if not result.candidates:
        raise ConfigError(f"searcher={cfg.searcher.get('name')} returned no candidates")
    result.candidates[0].genotype.save(run_dir / "genotype.yaml")  # kept if retraining crashes
    datamodule = instantiate(cfg.data)
    outputs = targets.out_channels(cfg, datamodule.num_classes)
    report = {}
    if result.scored_val:  # the search chose on these val images: the result is reported on the rest
        datamodule.reserve_val(result.scored_val)
        report = {"val_report": f"val less the {len(result.scored_val)} images the search scored candidates on",
                  "val_images_reported": len(datamodule.dataset("val"))}
    selection = _selection(cfg, len(result.candidates))
    # fine-tuning settings of candidates that arrive with weights (a random baseline forwards its space's)
    finetune = cfg.searcher.get("finetune") if any(c.network is not None for c in result.candidates) else None
    keep_best = bool(finetune and finetune.get("keep_best") and int(cfg.retrain.epochs) > 0)
    if selection == "holdout" or keep_best:  # choose among candidates / epochs on held-out train, report on val
        held_out = datamodule.hold_out_train(float(cfg.retrain.holdout))
        report["retrain_holdout_images"] = len(held_out)
    retrained = [_retrain(cfg, run_dir, rank, candidate, datamodule, logger, finetune, keep_best)
                 for rank, candidate in enumerate(result.candidates)]
    if any(entry is None for entry in retrained):  # a DDP rank other than 0
        return {}
    summary = {
        "task": "search",
        "searcher": cfg.searcher.get("name"),
        **architecture(result.candidates[0].genotype, outputs),
        "data": cfg.data.get("name"),
        "seed": int(cfg.seed),
        **result.summary,
        **report,
    }
    if torch.cuda.is_available():
        summary["search_gpu_hours"] = round(result.summary.get("search_wall_time_s", 0.0) * _gpus(cfg) / 3600, 4)
    if int(cfg.retrain.epochs) > 0:
        best = targets.best(cfg, retrained, prefix="holdout" if selection == "holdout" else "val")
        winner = spaces.resolve_arch(best["genotype"])
        winner.save(run_dir / "genotype.yaml")
        summary.update(architecture(winner, outputs))
        summary.update({key: value for key, value in best.items() if key not in ("genotype", "rank")})
        summary["model"] = str(_copy(Path(best["model"]), run_dir / "model.pt"))
        if best.get("onnx"):
            summary["onnx"] = str(_copy(Path(best["onnx"]), run_dir / "model.onnx"))
        summary["retrained"] = retrained
        # what chose model.pt among the retrained candidates
        summary["winner_selected_on"] = {"holdout": f"held-out train (retrain.holdout={cfg.retrain.holdout})",
                                         "val": "val (retrain.selection=val: val is also the report)",
                                         None: "the only candidate"}[selection]
    if result.on_retrained is not None:
        summary.update(result.on_retrained(retrained))
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    summary["run_dir"] = str(run_dir)
    return finish(run_dir, summary, logger)


def _selection(cfg: DictConfig, candidates: int) -> str | None:
    """How model.pt is chosen among retrained candidates: None when there is nothing to choose
    (one candidate, or no retraining), else ``retrain.selection`` (``holdout``: on a held-out part
    of train the candidates do not train on, so val is only the report; ``val``: on val)."""
    if candidates < 2 or int(cfg.retrain.epochs) <= 0:
        return None
    return str(cfg.retrain.selection)


def _gpus(cfg: DictConfig) -> int:
    """GPUs a search occupied: ``trainer.devices`` (all visible ones for auto / -1)."""
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if isinstance(devices, int) and devices > 0:
        return devices
    if OmegaConf.is_list(devices):
        return len(devices)
    return torch.cuda.device_count()


def _finetune_config(cfg: DictConfig, finetune: DictConfig) -> DictConfig:
    """``cfg`` with fine-tuning's schedule: train.optimizer's lr × ``lr_scale``, its scheduler
    and warm-up."""
    tuned = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(tuned):
        tuned.train.optimizer.lr = float(cfg.train.optimizer.lr) * float(finetune.lr_scale)
        tuned.train.scheduler = str(finetune.scheduler)
        tuned.train.warmup_fraction = float(finetune.warmup_fraction)
    return tuned


def _retrain(
    cfg: DictConfig, run_dir: Path, rank: int, candidate: Candidate, datamodule: Any, logger: Any,
    finetune: DictConfig | None = None, keep_best: bool = False,
) -> dict[str, Any] | None:
    """Train one candidate for ``retrain.epochs`` in ``retrain/<rank>_<hash>/`` (resumable);
    0 epochs keeps only what the search measured. A candidate with weights (FMAS's sliced
    sub-networks) is fine-tuned with ``finetune``'s schedule, keeping its best weights by the
    held-out score when ``keep_best``."""
    genotype = candidate.genotype
    entry: dict[str, Any] = {"rank": rank, "genotype": genotype.to_dict(), "genotype_hash": genotype.hash,
                             **{f"search_{key}": value for key, value in candidate.scores.items()}}
    epochs = int(cfg.retrain.epochs)
    if epochs <= 0:
        return entry
    out_dir = run_dir / "retrain" / f"{rank}_{genotype.hash}"
    out_dir.mkdir(parents=True, exist_ok=True)
    genotype.save(out_dir / "genotype.yaml")
    net = candidate.network if candidate.network is not None else spaces.build(
        genotype, targets.out_channels(cfg, datamodule.num_classes), **weights(cfg))
    checkpoint = out_dir / "last.ckpt" if cfg.get("resume") and (out_dir / "last.ckpt").is_file() else None
    tuned = _finetune_config(cfg, finetune) if candidate.network is not None and finetune is not None else None
    fitted = fit(tuned or cfg, out_dir, genotype, net, datamodule, logger, checkpoint, max_epochs=epochs,
                 keep_best=tuned is not None and keep_best)
    if fitted is None:
        return None
    schedule = ({"finetune_lr": tuned.train.optimizer.lr, "finetune_scheduler": tuned.train.scheduler,
                 "finetune_warmup_fraction": tuned.train.warmup_fraction} if tuned is not None else {})
    return {**entry, **fitted, **schedule, "retrain_dir": str(out_dir)}


def _copy(source: Path, destination: Path) -> Path:
    shutil.copyfile(source, destination)
    return destination
