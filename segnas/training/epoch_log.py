"""Logs a cluster user can read: one line per training epoch through the ``segnas`` logger, which
Hydra writes to ``<run dir>/run.log`` and the console, and the live progress bar only where a
terminal shows it.

Under SLURM or ``nohup`` the bar's carriage-return updates pile up in the log file (about 100 kB
per short run) while ``run.log`` gets nothing per epoch; a line per epoch is what can be read
(``tail -f``, ``grep``) afterwards.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)


def live_progress_bar(setting: bool | None) -> bool:
    """``trainer.enable_progress_bar``: true or false as set; null (the default) shows the bar
    only when Lightning's stream for it (stdout) is a terminal."""
    return sys.stdout.isatty() if setting is None else bool(setting)


class EpochLog(pl.Callback):
    """``epoch k/N: train loss ..., val/<score> ..., lr ..., <seconds> s`` on rank 0 after every
    training epoch (after its validation, when one ran in that epoch); for a search module, whose
    epoch is one unit of work, the module's ``unit_line()`` instead.

    The train loss is the mean over the epoch's steps of what ``training_step`` returned, or the
    last logged ``train/loss`` for modules that optimise manually and return nothing.

    ``log_file``: the run's log (Hydra's ``run.log``). A rank started by ``ddp_spawn`` is a fresh
    interpreter that Hydra's logging never configured, so its lines would reach no file; there,
    while it fits, the lines are appended to ``log_file`` when the file exists.
    """

    def __init__(self, log_file: Path | None = None) -> None:
        self.start = time.perf_counter()
        self.losses: list[float] = []
        self.validated = False
        self.log_file = log_file
        self._handler: logging.Handler | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        spawned = multiprocessing.parent_process() is not None
        unconfigured = not logging.getLogger().handlers  # Hydra's logging did not reach this process
        if (
            spawned
            and unconfigured
            and trainer.is_global_zero
            and self.log_file is not None
            and self.log_file.is_file()
        ):
            self._handler = logging.FileHandler(self.log_file)
            self._handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
            logging.getLogger("segnas").addHandler(self._handler)
            logging.getLogger("segnas").setLevel(logging.INFO)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._handler is not None:
            logging.getLogger("segnas").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start, self.losses, self.validated = time.perf_counter(), [], False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(float(loss))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        unit_line = getattr(pl_module, "unit_line", None)  # a search module: its unit's own line
        if unit_line is not None:
            log.info(unit_line())
            return
        metrics = trainer.callback_metrics
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {trainer.current_epoch + 1}{total}:"]
        if self.losses:
            parts.append(f"train loss {sum(self.losses) / len(self.losses):.4f},")
        elif "train/loss" in metrics:
            parts.append(f"train loss {float(metrics['train/loss']):.4f},")
        if self.validated:
            parts += [
                f"{name} {float(value):.4f},"
                for name, value in sorted(metrics.items())
                if name.startswith("val/") and value.numel() == 1
            ]
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g},")
        parts.append(f"{time.perf_counter() - self.start:.1f} s")
        log.info(" ".join(parts))
