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
from segnas.errors import ConfigError
from segnas.hardware.gap8 import Gap8Latency
from segnas.quantize.deploy import Deployment, quantize_network, summary_fields
from segnas.quantize.static import QuantizeOptions
from segnas.report.loggers import build_logger
from segnas.report.run_dir import write_config
from segnas.settings import schema
from segnas.settings.run import QuantizeSettings
from segnas.tasks.summary import architecture, finish
from segnas.training import load_network

log = logging.getLogger(__name__)


def deployment(settings: QuantizeSettings, datamodule: Any) -> Deployment:
    """The typed plan from ``quantize.*``; a null ``input_size`` is the first val image's size."""
    size = settings.input_size
    if size is None:
        datamodule.setup("validate")
        size = list(datamodule.eval_dataset("val")[0]["image"].shape[-2:])
    return Deployment(
        input_size=(int(size[0]), int(size[1])),
        options=QuantizeOptions(
            calibration=str(settings.calibration),
            per_channel=settings.per_channel,
            keep_float=tuple(settings.keep_float),
            reduce_range=settings.reduce_range,
        ),
        calib_images=settings.calib_images,
        val_images=settings.val_images,
        threads=settings.threads,
        opset=settings.opset,
        mode=str(settings.mode),
        max_drop=settings.max_drop,
        select_images=settings.select_images,
        sensitivity=settings.sensitivity,
    )


def network_file(checkpoint: str) -> Path:
    """A run directory means its ``model.pt`` (the network it delivers: a search's retrained
    winner, a training's selected model), else its ``last.ckpt``; a file is itself."""
    path = Path(checkpoint)
    return path / "model.pt" if path.is_dir() and (path / "model.pt").is_file() else path


def gap8_target(cfg: DictConfig) -> Gap8Latency:
    """The run's GAP8 model when ``hardware=gap8`` (its constants), else the shipped one."""
    hardware = cfg.get("hardware")
    if hardware is not None and str(hardware.get("_target_", "")).endswith("Gap8Latency"):
        return instantiate(hardware)
    return Gap8Latency()


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    settings = schema.load(cfg).quantize
    genotype, num_classes, net = load_network(network_file(cfg.checkpoint))
    datamodule = instantiate(cfg.data)
    if targets.out_channels(cfg, datamodule.num_classes) != num_classes:
        raise ConfigError(
            f"checkpoint={cfg.checkpoint} predicts {num_classes} classes but data.num_classes={datamodule.num_classes}"
        )
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
