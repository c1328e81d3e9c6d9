"""``task=train``: train a fixed architecture (a preset or a genotype file), score it on val, and
(``quantize.in_summary``) score its int8 version too (:func:`~segnas.tasks.deployment.int8_summary`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas import spaces, targets
from segnas.offline_weights import describe
from segnas.report.loggers import build_logger
from segnas.report.run_dir import resume_checkpoint, write_config
from segnas.settings import schema
from segnas.tasks.deployment import INT8_DIR, gap8_target, int8_summary
from segnas.tasks.fitting import fit, weights
from segnas.tasks.summary import architecture, finish


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    checkpoint = resume_checkpoint(run_dir, cfg.get("resume"))
    datamodule = instantiate(cfg.data)
    genotype = spaces.resolve_arch(cfg.arch)
    outputs = targets.out_channels(cfg, datamodule.num_classes)
    net = spaces.build(genotype, outputs, **weights(cfg))
    write_config(run_dir, cfg)
    genotype.save(run_dir / "genotype.yaml")
    logger = build_logger(cfg.get("logger"), run_dir)
    fitted = fit(cfg, run_dir, genotype, net, datamodule, logger, checkpoint)
    if fitted is None:
        return {}
    summary = {
        "task": "train",
        "arch": str(cfg.arch),
        **architecture(genotype, outputs),
        "data": cfg.data.get("name"),
        "seed": int(cfg.seed),
        "backbone_weights": describe(
            bool(cfg.model.pretrained), cfg.model.backbone_weights, genotype.arch.get("backbone")
        ),
        **fitted,
        **int8_summary(
            fitted["model"],
            datamodule,
            schema.load(cfg).quantize,
            gap8_target(cfg),
            run_dir / INT8_DIR,
            targets.task_type(cfg),
        ),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "run_dir": str(run_dir),
    }
    return finish(run_dir, summary, logger)
