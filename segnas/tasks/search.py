"""``task=search``: run ``searcher=<name>``, save the winner's genotype, retrain every candidate
the searcher returns for ``retrain.epochs`` and keep the best as ``model.pt`` / ``model.onnx``.

The pipeline's side of the searcher contract (:mod:`segnas.searchers.contract`): it builds the
data module once and hands it with the rest of the run to the searcher in a
:class:`~segnas.searchers.contract.SearchContext`, owns ``genotype.yaml`` (the first candidate's,
replaced by the retrained winner's when that differs) and ``summary.json``, and calls the
result's hook once after retraining. The winner's ``model.pt`` is then quantized to int8 and its
int8 scores join the summary (:func:`~segnas.tasks.deployment.int8_summary`)."""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from segnas import spaces, targets
from segnas.errors import ConfigError
from segnas.evaluation import eval_protocol
from segnas.report.loggers import build_logger
from segnas.report.run_dir import resume_checkpoint, write_config
from segnas.searchers.budget import Budget
from segnas.searchers.contract import FinetuneSettings, SearchContext
from segnas.searchers.engine import search_strategy
from segnas.searchers.registry import registration
from segnas.searchers.result import Candidate
from segnas.settings import schema
from segnas.settings.run import RetrainSettings, RunSettings, Selection
from segnas.tasks.deployment import INT8_DIR, gap8_target, int8_summary
from segnas.tasks.fitting import fit, weights
from segnas.tasks.summary import Retrained, SearchSummary, architecture, finish
from segnas.training.trainer import build_module, build_trainer


def run(cfg: DictConfig) -> SearchSummary:
    """Search, save the winner's genotype, retrain every returned candidate, keep the best."""
    start = time.perf_counter()
    settings = schema.load(cfg)
    if settings.searcher is None:
        raise ConfigError("task=search needs searcher=<name> (conf/searcher/): e.g. searcher=autodeeplab")
    search = registration(settings.searcher.name).search()
    run_dir = Path(cfg.run_dir).resolve()
    checkpoint = resume_checkpoint(run_dir, cfg.get("resume"))
    write_config(run_dir, cfg)
    logger = build_logger(cfg.get("logger"), run_dir)
    datamodule = instantiate(cfg.data)  # the run's one data module: the search's, then retraining's
    result = search(settings.searcher, context(cfg, settings, run_dir, checkpoint, logger, datamodule))
    if not result.candidates:
        raise ConfigError(f"searcher={settings.searcher.name} returned no candidates")
    genotype_file = run_dir / "genotype.yaml"
    result.candidates[0].genotype.save(genotype_file)  # kept if retraining crashes
    outputs = targets.out_channels(cfg, datamodule.num_classes)
    report = {}
    if result.scored_val:  # the search chose on these val images: the result is reported on the rest
        datamodule.reserve_val(result.scored_val)
        report = {
            "val_report": f"val less the {len(result.scored_val)} images the search scored candidates on",
            "val_images_reported": len(datamodule.dataset("val")),
        }
    epochs = settings.retrain.epochs
    selection = _selection(settings.retrain, len(result.candidates))
    # candidates that arrive with weights are fine-tuned with the searcher's schedule for it
    finetune = result.finetune if any(c.network is not None for c in result.candidates) else None
    keep_best = bool(finetune and finetune.keep_best and epochs > 0)
    if selection == Selection.holdout or keep_best:  # choose among candidates / epochs on held-out train
        held_out = datamodule.hold_out_train(settings.retrain.holdout)
        report["retrain_holdout_images"] = len(held_out)
    retrained = [
        _retrain(cfg, run_dir, rank, candidate, datamodule, logger, epochs, finetune, keep_best)
        for rank, candidate in enumerate(result.candidates)
    ]
    if any(entry is None for entry in retrained):  # a DDP rank other than 0
        return {}
    summary: SearchSummary = {
        "task": "search",
        "searcher": settings.searcher.name,
        **architecture(result.candidates[0].genotype, outputs),
        "data": cfg.data.get("name"),
        "seed": settings.seed,
        **result.summary,
        **report,
    }
    if torch.cuda.is_available():
        summary["search_gpu_hours"] = round(result.summary.get("search_wall_time_s", 0.0) * _gpus(cfg) / 3600, 4)
    if epochs > 0:
        best = targets.best(cfg, retrained, prefix="holdout" if selection == Selection.holdout else "val")
        winner = spaces.resolve_arch(best["genotype"])
        if winner.hash != result.candidates[0].genotype.hash:
            winner.save(genotype_file)
        summary.update(architecture(winner, outputs))
        summary.update({key: value for key, value in best.items() if key not in ("genotype", "rank")})
        summary["model"] = str(_copy(Path(best["model"]), run_dir / "model.pt"))
        if best.get("onnx"):
            summary["onnx"] = str(_copy(Path(best["onnx"]), run_dir / "model.onnx"))
        summary["retrained"] = retrained
        # what chose model.pt among the retrained candidates
        summary["winner_selected_on"] = {
            Selection.holdout: f"held-out train (retrain.holdout={settings.retrain.holdout})",
            Selection.val: "val (retrain.selection=val: val is also the report)",
            None: "the only candidate",
        }[selection]
    if result.on_retrained is not None:
        summary.update(result.on_retrained(retrained))
    summary.update(
        int8_summary(
            summary.get("model"),
            datamodule,
            settings.quantize,
            gap8_target(cfg),
            run_dir / INT8_DIR,
            settings.task_type,
        )
    )
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    summary["run_dir"] = str(run_dir)
    return finish(run_dir, summary, logger)


def context(
    cfg: DictConfig, settings: RunSettings, run_dir: Path, resume: Path | None, logger: Any, datamodule: Any
) -> SearchContext:
    """What the searcher is handed of the run (:class:`~segnas.searchers.contract.SearchContext`):
    the shared settings typed, and the run's training stack as three builders."""
    return SearchContext(
        run_dir=run_dir,
        resume=resume,
        logger=logger,
        datamodule=datamodule,
        task_type=settings.task_type,
        seed=settings.seed,
        budget=Budget(settings.budget.wall_time_s, settings.budget.images),
        protocol=eval_protocol(cfg),
        crop_size=int(cfg.data.crop_size),
        pretrained=settings.model.pretrained,
        backbone_weights=settings.model.backbone_weights,
        train=settings.train,
        hardware=instantiate(cfg.hardware) if cfg.get("hardware") is not None else None,
        train_module=partial(build_module, cfg),
        trainer=partial(build_trainer, cfg, logger=logger),
        search_trainer=partial(
            build_trainer, cfg, logger=logger, datamodule=None, selection=False, strategy=search_strategy(cfg.trainer)
        ),
    )


def _selection(retrain: RetrainSettings, candidates: int) -> Selection | None:
    """How model.pt is chosen among retrained candidates: None when there is nothing to choose
    (one candidate, or no retraining), else ``retrain.selection`` (``holdout``: on a held-out part
    of train the candidates do not train on, so val is only the report; ``val``: on val)."""
    if candidates < 2 or retrain.epochs <= 0:
        return None
    return retrain.selection


def _gpus(cfg: DictConfig) -> int:
    """GPUs a search occupied: ``trainer.devices`` (all visible ones for auto / -1)."""
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if isinstance(devices, int) and devices > 0:
        return devices
    if OmegaConf.is_list(devices):
        return len(devices)
    return torch.cuda.device_count()


def _finetune_config(cfg: DictConfig, finetune: FinetuneSettings) -> DictConfig:
    """``cfg`` with fine-tuning's schedule: train.optimizer's lr × ``lr_scale``, its scheduler
    and warm-up."""
    tuned = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(tuned):
        tuned.train.optimizer.lr = float(cfg.train.optimizer.lr) * finetune.lr_scale
        tuned.train.scheduler = str(finetune.scheduler)
        tuned.train.warmup_fraction = finetune.warmup_fraction
    return tuned


def _retrain(
    cfg: DictConfig,
    run_dir: Path,
    rank: int,
    candidate: Candidate,
    datamodule: Any,
    logger: Any,
    epochs: int,
    finetune: FinetuneSettings | None = None,
    keep_best: bool = False,
) -> Retrained | None:
    """Train one candidate for ``epochs`` (retrain.epochs) in ``retrain/<rank>_<hash>/``
    (resumable); 0 epochs keeps only what the search measured. A candidate with weights (FMAS's
    sliced sub-networks) is fine-tuned with ``finetune``'s schedule, keeping its best weights by
    the held-out score when ``keep_best``."""
    genotype = candidate.genotype
    entry: Retrained = {
        "rank": rank,
        "genotype": genotype.to_dict(),
        "genotype_hash": genotype.hash,
        **{f"search_{key}": value for key, value in candidate.scores.items()},
    }
    if epochs <= 0:
        return entry
    out_dir = run_dir / "retrain" / f"{rank}_{genotype.hash}"
    out_dir.mkdir(parents=True, exist_ok=True)
    genotype.save(out_dir / "genotype.yaml")
    net = (
        candidate.network
        if candidate.network is not None
        else spaces.build(genotype, targets.out_channels(cfg, datamodule.num_classes), **weights(cfg))
    )
    checkpoint = out_dir / "last.ckpt" if cfg.get("resume") and (out_dir / "last.ckpt").is_file() else None
    tuned = _finetune_config(cfg, finetune) if candidate.network is not None and finetune is not None else None
    fitted = fit(
        tuned or cfg,
        out_dir,
        genotype,
        net,
        datamodule,
        logger,
        checkpoint,
        max_epochs=epochs,
        keep_best=tuned is not None and keep_best,
    )
    if fitted is None:
        return None
    schedule = (
        {
            "finetune_lr": tuned.train.optimizer.lr,
            "finetune_scheduler": tuned.train.scheduler,
            "finetune_warmup_fraction": tuned.train.warmup_fraction,
        }
        if tuned is not None
        else {}
    )
    return {**entry, **fitted, **schedule, "retrain_dir": str(out_dir)}


def _copy(source: Path, destination: Path) -> Path:
    shutil.copyfile(source, destination)
    return destination
