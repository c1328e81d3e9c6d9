"""``task=quantize``: a trained network (a run directory, ``model.pt`` or ``.ckpt``) to the int8
ONNX file a device runs, with ``quantize.json`` saying what it costs and gains
(:mod:`segnas.quantize.deploy`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas import targets
from segnas.quantize.deploy import quantize_network, summary_fields
from segnas.report.loggers import build_logger
from segnas.report.run_dir import write_config
from segnas.settings import schema
from segnas.tasks.deployment import deployment, gap8_target
from segnas.tasks.summary import architecture, finish
from segnas.training import load_network

log = logging.getLogger(__name__)


def network_file(checkpoint: str) -> Path:
    """A run directory means its ``model.pt`` (the network it delivers: a search's retrained
    winner, a training's selected model), else its ``last.ckpt``; a file is itself."""
    path = Path(checkpoint)
    return path / "model.pt" if path.is_dir() and (path / "model.pt").is_file() else path


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    settings = schema.load(cfg).quantize
    genotype, num_classes, net = load_network(network_file(cfg.checkpoint))
    datamodule = instantiate(cfg.data)
    targets.check_checkpoint(cfg, num_classes, datamodule.num_classes)
    write_config(run_dir, cfg)
    logger = build_logger(cfg.get("logger"), run_dir)
    report = quantize_network(net.eval(), datamodule, deployment(settings, datamodule), run_dir, gap8_target(cfg))
    summary = {
        "task": "quantize",
        "checkpoint": str(cfg.checkpoint),
        **architecture(genotype, num_classes),
        "data": datamodule.name,
        **summary_fields(report),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "run_dir": str(run_dir),
    }
    log.info(
        "int8: val mIoU %.4f (float32 %.4f, drop %.4f) · %.1f ms (float32 %.1f ms, %.2fx) · file %.2fx · %s",
        report["miou_int8"],
        report["miou_float32"],
        report["miou_drop"],
        report["latency_int8_ms"],
        report["latency_float32_ms"],
        report["latency_ratio"],
        report["file_ratio"],
        report["files"]["int8"],
    )
    return finish(run_dir, summary, logger)
