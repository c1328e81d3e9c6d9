"""``task=eval``: score a checkpoint (a ``.ckpt``, a ``model.pt`` or a run directory) on a split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas import targets
from segnas.report.loggers import build_logger
from segnas.report.run_dir import write_config
from segnas.tasks.summary import architecture, costs, finish, val_scores
from segnas.training import load_network
from segnas.training.trainer import build_module, build_trainer


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    genotype, num_classes, net = load_network(cfg.checkpoint)
    datamodule = instantiate(cfg.data)
    targets.check_checkpoint(cfg, num_classes, datamodule.num_classes)
    split = cfg.eval.split  # train or val: checked with the config
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
        **architecture(genotype, num_classes),
        "data": cfg.data.get("name"),
        **val_scores(scores, module, datamodule.class_names, prefix=split),
        f"{split}_protocol": module.protocol.describe(),
        **costs(cfg, net, (cfg.data.crop_size, cfg.data.crop_size)),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "run_dir": str(run_dir),
    }
    return finish(run_dir, summary, logger)
