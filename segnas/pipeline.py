"""``segnas.pipeline.run(cfg)``: what ``python -m segnas.run`` does with a composed config, and
what tests call directly. It checks the config, makes the run directory, seeds, runs
``segnas.tasks.<cfg.task>.run(cfg)`` and closes the logger whatever happens."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from segnas.config_checks import check_config

__all__ = ["run", "check_config"]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task``; the W&B run is closed even when the task raises. The config is checked
    before Lightning and W&B are imported, so a mistake is reported within about a second."""
    settings = check_config(cfg)
    import pytorch_lightning as pl

    from segnas.report.loggers import close_loggers

    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    task = importlib.import_module(f"segnas.tasks.{settings.task}")
    failed = True
    try:
        summary = task.run(cfg)
        failed = False
    finally:
        close_loggers(failed)
    if settings.task != "profile" and summary:  # profile's last stdout line is its JSON
        genotype = run_dir / "genotype.yaml"
        where = {
            "genotype": genotype if genotype.is_file() else None,
            "summary": run_dir / "summary.json",
            "model": summary.get("model"),
            "onnx": summary.get("onnx"),
            "int8": summary.get("int8_model_onnx"),
            "logs": summary.get("logs"),
            "run dir": run_dir,
        }
        print("\n".join(f"{name:>8}: {path}" for name, path in where.items() if path), flush=True)
    return summary
