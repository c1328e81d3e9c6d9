"""The tasks behind ``python -m segnas.run``: a plain ``run(cfg)`` that tests call directly.

``task=train`` trains a fixed architecture, ``task=eval`` scores a checkpoint on a split,
``task=profile`` prices an architecture, ``task=search`` runs the chosen searcher,
``task=compare`` runs several searchers and their random baselines (:mod:`segnas.compare`). Each
writes ``config.yaml`` and ``summary.json`` to the run directory and returns the summary.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from segnas import hardware, spaces, targets
from segnas.errors import ConfigError
from segnas.hardware.onnx_export import export_onnx
from segnas.metrics import per_class_iou
from segnas.report.loggers import build_logger, close_loggers, log_location
from segnas.report.run_dir import resume_checkpoint, write_config, write_json
from segnas.searchers import Candidate
from segnas.training import load_network
from segnas.training.checkpoint import save_network
from segnas.training.trainer import build_module, build_trainer

log = logging.getLogger(__name__)

TASKS = ("search", "train", "eval", "profile", "compare")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task``; the W&B run is closed even when the task raises."""
    check_config(cfg)
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    failed = True
    try:
        summary = {"search": search, "train": _train, "eval": _eval, "profile": _profile,
                   "compare": _compare}[cfg.task](cfg, run_dir)
        failed = False
    finally:
        close_loggers(failed)
    if cfg.task != "profile" and summary:  # profile's last stdout line is its JSON
        genotype = run_dir / "genotype.yaml"
        where = {"genotype": genotype if genotype.is_file() else None,
                 "summary": run_dir / "summary.json", "model": summary.get("model"),
                 "onnx": summary.get("onnx"), "logs": summary.get("logs"), "run dir": run_dir}
        print("\n".join(f"{name:>8}: {path}" for name, path in where.items() if path), flush=True)
    return summary


def check_config(cfg: DictConfig) -> None:
    """Catch the config mistakes that would otherwise surface as a deep traceback."""
    if cfg.get("task") not in TASKS:
        raise ConfigError(f"task={cfg.get('task')}: expected one of {', '.join(TASKS)}")
    if cfg.get("run_dir") in (None, ""):
        raise ConfigError("run_dir is not set (it defaults to hydra.runtime.output_dir under segnas.run)")
    for key in ("num_classes", "crop_size", "batch_size"):
        value = OmegaConf.select(cfg, f"data.{key}")
        if not isinstance(value, int) or value < (2 if key == "num_classes" else 1):
            raise ConfigError(f"data.{key}={value}: expected a positive integer" +
                              (" >= 2" if key == "num_classes" else ""))
    size = OmegaConf.select(cfg, "profile.input_size")
    if size is None or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ConfigError(f"profile.input_size={size}: expected [H, W], two positive integers")
    if cfg.task in ("train", "profile") and not cfg.get("arch"):
        raise ConfigError(f"task={cfg.task} needs arch=<preset or genotype file>; presets: "
                          f"{', '.join(sorted(spaces.presets()))}")
    if cfg.task == "eval" and not cfg.get("checkpoint"):
        raise ConfigError("task=eval needs checkpoint=<.ckpt, model.pt or run dir>")
    targets.check(cfg)


def search(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Search, save the winner's genotype, retrain every returned candidate, keep the best."""
    start = time.perf_counter()
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
    retrained = [_retrain(cfg, run_dir, rank, candidate, datamodule, logger)
                 for rank, candidate in enumerate(result.candidates)]
    if any(entry is None for entry in retrained):  # a DDP rank other than 0
        return {}
    summary = {
        "task": "search",
        "searcher": cfg.searcher.get("name"),
        **_architecture(result.candidates[0].genotype, targets.out_channels(cfg, datamodule.num_classes)),
        "data": cfg.data.get("name"),
        "seed": int(cfg.seed),
        **result.summary,
    }
    if torch.cuda.is_available():
        summary["search_gpu_hours"] = round(result.summary.get("search_wall_time_s", 0.0) * _gpus(cfg) / 3600, 4)
    if int(cfg.retrain.epochs) > 0:
        best = targets.best(cfg, retrained)
        winner = spaces.resolve_arch(best["genotype"])
        winner.save(run_dir / "genotype.yaml")
        summary.update(_architecture(winner, targets.out_channels(cfg, datamodule.num_classes)))
        summary.update({key: value for key, value in best.items() if key not in ("genotype", "rank")})
        summary["model"] = str(_copy(Path(best["model"]), run_dir / "model.pt"))
        if best.get("onnx"):
            summary["onnx"] = str(_copy(Path(best["onnx"]), run_dir / "model.onnx"))
        summary["retrained"] = retrained
    if result.on_retrained is not None:
        summary.update(result.on_retrained(retrained))
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    summary["run_dir"] = str(run_dir)
    return _finish(run_dir, summary, logger)


def _gpus(cfg: DictConfig) -> int:
    """GPUs a search occupied: ``trainer.devices`` (all visible ones for auto / -1)."""
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if isinstance(devices, int) and devices > 0:
        return devices
    if OmegaConf.is_list(devices):
        return len(devices)
    return torch.cuda.device_count()


def _compare(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from segnas.compare import compare  # it runs pipeline.search for every entry

    return compare(cfg, run_dir)


def _retrain(
    cfg: DictConfig, run_dir: Path, rank: int, candidate: Candidate, datamodule, logger
) -> dict[str, Any] | None:
    """Train one candidate for ``retrain.epochs`` in ``retrain/<rank>_<hash>/`` (resumable);
    0 epochs keeps only what the search measured."""
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
        genotype, targets.out_channels(cfg, datamodule.num_classes), **_weights(cfg))
    checkpoint = out_dir / "last.ckpt" if cfg.get("resume") and (out_dir / "last.ckpt").is_file() else None
    fitted = _fit(cfg, out_dir, genotype, net, datamodule, logger, checkpoint, max_epochs=epochs)
    if fitted is None:
        return None
    return {**entry, **fitted, "retrain_dir": str(out_dir)}


def _copy(source: Path, destination: Path) -> Path:
    shutil.copyfile(source, destination)
    return destination


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    checkpoint = resume_checkpoint(run_dir, cfg.get("resume"))
    datamodule = instantiate(cfg.data)
    genotype = spaces.resolve_arch(cfg.arch)
    net = spaces.build(genotype, targets.out_channels(cfg, datamodule.num_classes), **_weights(cfg))
    write_config(run_dir, cfg)
    genotype.save(run_dir / "genotype.yaml")
    logger = build_logger(cfg.get("logger"), run_dir)
    fitted = _fit(cfg, run_dir, genotype, net, datamodule, logger, checkpoint)
    if fitted is None:
        return {}
    summary = {
        "task": "train",
        "arch": str(cfg.arch),
        **_architecture(genotype, targets.out_channels(cfg, datamodule.num_classes)),
        "data": cfg.data.get("name"),
        **fitted,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "run_dir": str(run_dir),
    }
    return _finish(run_dir, summary, logger)


def _fit(
    cfg: DictConfig, out_dir: Path, genotype, net: torch.nn.Module, datamodule, logger,
    checkpoint: Path | None, max_epochs: int | None = None,
) -> dict[str, Any] | None:
    """Train ``net`` into ``out_dir`` and score it on val; None on DDP ranks other than 0."""
    outputs = targets.out_channels(cfg, datamodule.num_classes)
    module = build_module(cfg, genotype, outputs, net)
    trainer = build_trainer(cfg, out_dir, logger, datamodule, net=net,
                            **({"max_epochs": max_epochs} if max_epochs is not None else {}))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
    scores = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    if not trainer.is_global_zero:
        return None
    epochs, steps = _progress(trainer, out_dir)
    crop = (cfg.data.crop_size, cfg.data.crop_size)
    return {
        "task_type": targets.task_type(cfg),
        **_val_scores(scores, module, datamodule.class_names),
        **_costs(cfg, net, crop),
        "epochs": epochs,
        "steps": steps,
        "images_seen": steps * cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "checkpoint": str(out_dir / "last.ckpt"),
        "model": str(save_network(out_dir / "model.pt", genotype, outputs, net.cpu())),
        **_onnx(net, out_dir / "model.onnx", crop),
    }


def _eval(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    genotype, num_classes, net = load_network(cfg.checkpoint)
    datamodule = instantiate(cfg.data)
    if targets.out_channels(cfg, datamodule.num_classes) != num_classes:
        raise ConfigError(f"checkpoint={cfg.checkpoint} predicts {num_classes} channels but task_type="
                          f"{targets.task_type(cfg)} with data.num_classes={datamodule.num_classes} needs "
                          f"{targets.out_channels(cfg, datamodule.num_classes)}")
    split = cfg.eval.split
    if split not in ("train", "val"):
        raise ConfigError(f"eval.split={split}: expected train or val")
    write_config(run_dir, cfg)
    module = build_module(cfg, genotype, num_classes, net)
    logger = build_logger(cfg.get("logger"), run_dir)
    trainer = build_trainer(cfg, run_dir, logger, datamodule)
    datamodule.setup("validate")
    loader = datamodule.loader(datamodule.eval_dataset(split), train=False)
    scores = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    if not trainer.is_global_zero:
        return {}
    summary = {
        "task": "eval",
        "checkpoint": str(cfg.checkpoint),
        "split": split,
        **_architecture(genotype, num_classes),
        "data": cfg.data.get("name"),
        **_val_scores(scores, module, datamodule.class_names, prefix=split),
        **_costs(cfg, net, (cfg.data.crop_size, cfg.data.crop_size)),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "run_dir": str(run_dir),
    }
    return _finish(run_dir, summary, logger)


def _profile(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    genotype = spaces.resolve_arch(cfg.arch)
    net = spaces.build(genotype, int(cfg.data.num_classes), **_weights(cfg))
    write_config(run_dir, cfg)
    summary = {
        "task": "profile",
        "arch": str(cfg.arch),
        **_architecture(genotype, int(cfg.data.num_classes)),
        **_costs(cfg, net, tuple(cfg.profile.input_size)),
    }
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    write_json(run_dir / "profile.json", summary)
    write_json(run_dir / "summary.json", summary)
    print(json.dumps(summary), flush=True)
    return summary


def _progress(trainer: pl.Trainer, run_dir: Path) -> tuple[int, int]:
    """Epochs and optimiser steps done; under ddp_spawn they live in the children, so the
    checkpoint they wrote is the record."""
    if trainer.global_step == 0 and (run_dir / "last.ckpt").is_file():
        state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
        return int(state["epoch"]), int(state["global_step"])
    return trainer.current_epoch, trainer.global_step


def _weights(cfg: DictConfig) -> dict[str, Any]:
    """Where the backbone's initial weights come from: a build option, not part of the genotype."""
    return {"pretrained": bool(cfg.model.pretrained), "backbone_weights": cfg.model.backbone_weights}


def _architecture(genotype, num_classes: int) -> dict[str, Any]:
    """``num_classes``: the network's output channels (1 for ``task_type=depth``)."""
    return {"space": genotype.space, "genotype_hash": genotype.hash, "genotype": genotype.arch,
            "num_classes": num_classes}


def _val_scores(
    scores: dict[str, float], module, class_names: list[str], prefix: str = "val"
) -> dict[str, Any]:
    """The module logs ``val/<score>`` whatever it validated on; ``prefix`` names the real split."""
    result: dict[str, Any] = {key.replace("val/", f"{prefix}_"): float(value) for key, value in scores.items()}
    if getattr(module, "last_confusion", None) is not None:  # segmentation only
        iou = per_class_iou(module.last_confusion).tolist()
        result[f"{prefix}_per_class_iou"] = {name: round(v, 4) if v == v else None for name, v in zip(class_names, iou)}
    return result


def _costs(cfg: DictConfig, net: torch.nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
    target = instantiate(cfg.hardware) if cfg.get("hardware") is not None else None
    return hardware.profile(net, tuple(input_size), target)


def _onnx(net: torch.nn.Module, path: Path, input_size: tuple[int, int]) -> dict[str, Any]:
    try:
        return {"onnx": str(export_onnx(net.cpu(), path, tuple(input_size)))}
    except ImportError as err:
        log.warning("ONNX export skipped: %s", err)
        return {"onnx": None, "onnx_skipped": str(err)}


#: The search's own cost, logged once per run as ``search/<name>`` (without the prefix).
SEARCH_COSTS = ("search_wall_time_s", "search_steps", "search_images_seen", "search_gpu_hours")


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """One set of names every run logs at its end, so the runs of a comparison line up in W&B:
    ``cost/*`` (the final network), ``search/*`` (what the search spent) and ``retrain/*`` (the
    retrained winner's validation scores)."""
    def numeric(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    metrics = {f"cost/{k}": summary[k] for k in ("params", "macs", "latency_ms") if numeric(summary.get(k))}
    if summary.get("task") == "search":
        metrics.update({f"search/{k.removeprefix('search_')}": summary[k] for k in SEARCH_COSTS
                        if numeric(summary.get(k))})
        metrics.update({f"retrain/{k}": value for k, value in summary.items()
                        if k.startswith("val_") and numeric(value)})
    return {key: float(value) for key, value in metrics.items()}


def _finish(run_dir: Path, summary: dict[str, Any], logger) -> dict[str, Any]:
    summary["logs"] = log_location(logger)
    write_json(run_dir / "summary.json", summary)
    if logger is not None and hasattr(logger, "log_metrics"):
        logger.log_metrics(final_metrics(summary))
    return summary
