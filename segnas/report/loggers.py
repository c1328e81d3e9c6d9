"""Experiment loggers from config, and closing them whatever happens.

W&B runs offline unless the user sets ``logger.offline=false``: the run is written under the run
directory and can be uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, WandbLogger


def build_logger(cfg: DictConfig | None, run_dir: Path) -> Logger | None:
    if cfg is None:
        return None
    return instantiate(cfg, save_dir=str(run_dir))


def close_loggers(failed: bool = False) -> None:
    """Finish the W&B run (if any) so that offline files are complete and the next job of a
    multirun starts a new run instead of appending to this one."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def is_wandb(logger: Logger | None) -> bool:
    return isinstance(logger, WandbLogger)


def log_location(logger: Logger | None) -> str | None:
    """Where a user finds this run's logs: the W&B run folder (what ``wandb sync`` takes) or the
    CSV logger's version folder."""
    if logger is None:
        return None
    if is_wandb(logger):
        return str(Path(logger.experiment.dir).parent)
    return getattr(logger, "log_dir", None) or logger.save_dir
