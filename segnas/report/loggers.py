"""Experiment loggers from config, and closing them whatever happens.

W&B runs offline unless the user sets ``logger.offline=false``: the run is written under the run
directory and can be uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import csv
import inspect
import logging
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

log = logging.getLogger(__name__)


def build_logger(cfg: DictConfig | None, run_dir: Path) -> Logger | None:
    """The configured logger, writing under ``run_dir``. Keys this logger does not take (an
    experiment preset's W&B ``group`` under ``logger=csv``) are dropped with a warning rather
    than failing the run."""
    if cfg is None:
        return None
    parameters = inspect.signature(get_class(cfg._target_)).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unused = [key for key in cfg if key != "_target_" and key not in parameters]
        if unused:
            log.warning("logger=%s takes no %s: ignored", cfg._target_.rsplit(".", 1)[-1], ", ".join(unused))
            cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key not in unused])
    return instantiate(cfg, save_dir=str(run_dir))


class _HeaderAwareWriter(ExperimentWriter):
    """Lightning's CSV writer remembers the columns it has written. Under ``trainer=ddp_spawn``
    each spawned process gets a copy of the parent's writer that has not seen the columns an
    earlier spawned fit added, and then appends rows under the wrong header or fails rewriting
    it. This writer takes the file's own header as the truth before every save."""

    def save(self) -> None:
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                header = next(csv.reader(handle), [])
            known = set(self.metrics_keys)
            self.metrics_keys = sorted(known | set(header))
            if set(header) != set(self.metrics_keys):
                self._rewrite_with_new_header(self.metrics_keys)
        super().save()


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger with a writer that stays correct across spawned processes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HeaderAwareWriter(log_dir=self.log_dir)
        return self._experiment


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
