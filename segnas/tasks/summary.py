"""What a task's ``summary.json`` holds and how it is written: the architecture, the validation
scores named by split, the costs of the network, and the final metrics every run logs.

The records are typed (:class:`Architecture`, :class:`Retrained`, :class:`SearchSummary`) so the
keys a comparison, a notebook or W&B reads are written down once; :func:`finish` is the one
writer of a task's ``summary.json`` (profile, compare and replay write their own kinds)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypedDict

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas import hardware
from segnas.genotype import Genotype
from segnas.metrics import per_class_iou
from segnas.report.loggers import log_location
from segnas.report.run_dir import write_json

log = logging.getLogger(__name__)


class Architecture(TypedDict):
    """The network a summary is about."""

    space: str
    genotype_hash: str
    genotype: dict[str, Any]
    #: the network's output channels (1 for task_type=depth)
    num_classes: int


class Retrained(TypedDict, total=False):
    """One candidate a search returned, retrained (``summary["retrained"]``): what the search measured
    (``search_<score>``), the retrained network's scores (``val_<score>``, ``holdout_<score>``,
    ``val_per_class_iou``...), its costs and files (:func:`segnas.tasks.fitting.fit`)."""

    rank: int
    genotype: dict[str, Any]
    genotype_hash: str
    task_type: str
    val_protocol: str
    params: int
    macs: int
    latency_ms: float
    epochs: int
    steps: int
    images_seen: int
    resumed_from: str | None
    checkpoint: str
    model: str
    onnx: str | None
    retrain_dir: str
    #: fine-tuned candidates (they arrived with weights): the schedule used
    finetune_lr: float
    finetune_scheduler: str
    finetune_warmup_fraction: float


class SearchSummary(Architecture, total=False):
    """``task=search``'s summary.json: the winner's architecture, the search's own entries (its
    :class:`~segnas.searchers.result.SearchResult` summary: at least the three costs below), what the
    pipeline added (the report split, the retrained candidates, the winner's scores and files), and
    the winner's int8 numbers (``int8_*``, :func:`~segnas.tasks.deployment.int8_summary`)."""

    task: str
    searcher: str
    data: str
    seed: int
    search_wall_time_s: float
    search_steps: int
    search_images_seen: int
    search_gpu_hours: float
    search_budget_wall_time_s: float | None
    search_budget_images: int | None
    search_budget_exhausted: str | None
    #: the search scored candidates on these val images: the report is on the rest
    val_report: str
    val_images_reported: int
    retrain_holdout_images: int
    retrained: list[Retrained]
    winner_selected_on: str
    model: str
    onnx: str
    wall_time_s: float
    run_dir: str
    logs: str | None


#: The search's own cost, logged once per run as ``search/<name>`` (without the prefix).
SEARCH_COSTS = ("search_wall_time_s", "search_steps", "search_images_seen", "search_gpu_hours")


def architecture(genotype: Genotype, num_classes: int) -> Architecture:
    """``num_classes``: the network's output channels (1 for ``task_type=depth``)."""
    return {
        "space": genotype.space,
        "genotype_hash": genotype.hash,
        "genotype": genotype.arch,
        "num_classes": num_classes,
    }


def val_scores(scores: dict[str, float], module: Any, class_names: list[str], prefix: str = "val") -> dict[str, Any]:
    """The module logs ``val/<score>`` whatever it validated on; ``prefix`` names the real split."""
    result: dict[str, Any] = {key.replace("val/", f"{prefix}_"): float(value) for key, value in scores.items()}
    if getattr(module, "last_confusion", None) is not None:  # segmentation only
        iou = per_class_iou(module.last_confusion).tolist()
        result[f"{prefix}_per_class_iou"] = {name: round(v, 4) if v == v else None for name, v in zip(class_names, iou)}
    return result


def costs(cfg: DictConfig, net: torch.nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
    """Params, MACs and (with a hardware target) latency of ``net`` at ``input_size``."""
    target = instantiate(cfg.hardware) if cfg.get("hardware") is not None else None
    return hardware.profile(net, tuple(input_size), target)


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """One set of names every run logs at its end, so the runs of a comparison line up in W&B:
    ``cost/*`` (the final network), ``search/*`` (what the search spent), ``retrain/*`` (the
    retrained winner's validation scores) and ``int8/*`` (that network quantized, when it was)."""

    def numeric(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    metrics = {f"cost/{k}": summary[k] for k in ("params", "macs", "latency_ms") if numeric(summary.get(k))}
    if summary.get("task") == "search":
        metrics.update(
            {f"search/{k.removeprefix('search_')}": summary[k] for k in SEARCH_COSTS if numeric(summary.get(k))}
        )
        metrics.update(
            {f"retrain/{k}": value for k, value in summary.items() if k.startswith("val_") and numeric(value)}
        )
    metrics.update(
        {
            f"int8/{k.removeprefix('int8_')}": value
            for k, value in summary.items()
            if k.startswith("int8_") and numeric(value)
        }
    )
    return {key: float(value) for key, value in metrics.items()}


def finish(run_dir: Path, summary: dict[str, Any], logger: Any) -> dict[str, Any]:
    """Write ``summary.json`` (with where the logs went) and log the final metrics."""
    summary["logs"] = log_location(logger)
    write_json(run_dir / "summary.json", summary)
    if logger is not None and hasattr(logger, "log_metrics"):
        logger.log_metrics(final_metrics(summary))
    return summary
