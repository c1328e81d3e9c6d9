"""One engine for every searcher: a LightningModule driven by one ``Trainer.fit``.

A search is a :class:`SearchModule` whose ``training_step`` is one unit of work (an auxcell round
of children, an FMAS generation, a random Auto-DeepLab architecture); the Trainer runs one unit
per epoch over :func:`unit_loader`. A search that trains on data, the Auto-DeepLab supernet, is a
:class:`SearchProgress` module whose unit is an epoch of its :class:`TrainingData` (training
batches, then its val loader). Either way everything a Lightning user expects holds for every
searcher:

- ``resume=`` is Lightning's ``ckpt_path``: ``last.ckpt`` is written after every unit by
  :class:`UnitCheckpoint` (``Trainer.save_checkpoint``) and the search's own state (controller, pymoo algorithm, caches,
  records, step counts) travels in it under :data:`STATE_KEY` through ``on_save_checkpoint`` /
  ``on_load_checkpoint`` (:class:`SearchProgress`);
- :class:`SearchBudget` stops ``fit`` when ``budget.wall_time_s`` or ``budget.images`` is spent
  and records why (after every unit, or every batch of a module that trains on data);
- :class:`RecordFiles` rewrites the search's record files (``search.csv``, ``fronts.csv``) and
  ``progress.csv`` (images, seconds and best held-out score after every unit: the anytime curve)
  on rank 0 after every unit;
- :class:`segnas.training.epoch_log.EpochLog` writes the per-unit line (the module's
  ``unit_line``) to ``run.log``;
- multi-GPU runs use the Trainer's DDP strategy (:func:`search_strategy`): Lightning launches the
  ranks and forms the process group, each rank does its share of a unit and the results are
  gathered (:mod:`segnas.searchers.distributed`). There is nothing for DistributedDataParallel
  to reduce in a unit module: the candidate and child networks a rank scores, and the controller
  every rank updates identically, are kept outside the module's registered children, so neither
  DDP nor the BatchNorm layer sync (which would all-reduce statistics of *different* networks)
  touches them. A module that trains on data registers its network, which DDP then wraps as it
  wraps any trained network (the supernet's weights are averaged over ranks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.strategies import DDPStrategy, Strategy, StrategyRegistry
from torch.utils.data import DataLoader

from segnas.report.anytime import PROGRESS_COLUMNS, PROGRESS_FILE
from segnas.report.images import ValidationImages
from segnas.report.run_dir import write_csv
from segnas.searchers.budget import Budget
from segnas.searchers.contract import SearchContext
from segnas.searchers.distributed import all_gather

log = logging.getLogger(__name__)

#: Key of the search's own state in a Lightning checkpoint.
STATE_KEY = "segnas_search"


def _rebuild_generator(device: str, state: bytes) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


def _reduce_generator(generator: torch.Generator) -> tuple[Any, tuple[str, bytes]]:
    return _rebuild_generator, (str(generator.device), generator.get_state().numpy().tobytes())


# A search module carries random generators (the controller's sampler, PPO's minibatch order)
# into ddp_spawn ranks. torch pickles a generator through a temporary state tensor, which spawn's
# pickler moves to shared memory behind a file descriptor that is closed again, with the
# temporary, before the rank starts ("bad value(s) in fds_to_keep"); as bytes it needs none.
ForkingPickler.register(torch.Generator, _reduce_generator)


def unit_loader() -> DataLoader:
    """One batch (its content unused) per epoch: the Trainer's epoch is the search's unit."""
    return DataLoader([torch.zeros(1)], batch_size=1)


class SearchStrategy(DDPStrategy):
    """Lightning's DDP (launching the ranks, the process group, rank-zero-only hooks) without the
    DistributedDataParallel wrapper for a unit module, which registers no parameters for DDP to
    reduce; a module that trains registered weights (the Auto-DeepLab supernet) is wrapped as
    Lightning's own DDP strategy wraps it. ``spawns``: the ranks are child processes
    (``ddp_spawn``, ``ddp_fork``), so what they found reaches this process only through their
    checkpoint."""

    def __init__(self, start_method: str = "popen", **kwargs: Any) -> None:
        super().__init__(start_method=start_method, **kwargs)
        self.spawns = start_method != "popen"

    def configure_ddp(self) -> None:
        """Wrap only a module with trainable parameters: a unit module's networks are each rank's
        own (see the module docstring), and DDP refuses a module with none."""
        if any(parameter.requires_grad for parameter in self.model.parameters()):
            super().configure_ddp()


def search_strategy(trainer: DictConfig) -> str | Strategy:
    """``trainer.strategy`` for a search module: a DDP strategy becomes :class:`SearchStrategy`
    with the same settings as Lightning's strategy of that name (``ddp``: the command is run again
    per rank; ``ddp_spawn``: spawned processes; ``..._find_unused_parameters_true``), anything else
    is kept."""
    strategy = str(trainer.get("strategy", "auto"))
    if not strategy.startswith("ddp") or strategy not in StrategyRegistry:
        return strategy
    return SearchStrategy(**StrategyRegistry[strategy]["init_params"])


class SearchProgress:
    """What every search module has (mixed into a LightningModule): what the budget reads of a
    search and what a resumed search must carry on counting (images seen, seconds spent across
    resumed runs, why the budget stopped it), and its state in the checkpoint under
    :data:`STATE_KEY`: its own :meth:`search_state` (what a resumed search needs to continue with
    the same next step) and :meth:`progress_state`."""

    #: units of work: the Trainer's epochs
    units: int
    images_seen: int = 0
    spent_before_s: float = 0.0
    budget_stopped: str | None = None
    #: ``time.monotonic()`` when this run of the search started (one clock for every process of
    #: this machine, so a spawned rank measures from the same start).
    started_at: float = 0.0

    def start_clock(self, started_at: float | None = None) -> None:
        self.started_at = time.monotonic() if started_at is None else started_at

    @property
    def wall_time_s(self) -> float:
        return self.spent_before_s + time.monotonic() - self.started_at

    @property
    def progress(self) -> list[dict[str, Any]]:
        """One row per unit (:data:`PROGRESS_COLUMNS`): the anytime curve ``task=compare`` plots."""
        if "_progress" not in self.__dict__:
            self.__dict__["_progress"] = []
        return self.__dict__["_progress"]

    def record_progress(self, unit: int, score: float | None) -> None:
        """After a unit: images and seconds so far and the best of the search's own held-out scores
        yet (``score``: this unit's best; None: nothing scored yet)."""
        previous = next((row["best_score"] for row in reversed(self.progress) if row["best_score"] is not None), None)
        best = score if previous is None else previous if score is None else max(previous, score)
        self.progress.append(
            {
                "unit": unit,
                "images_seen": int(self.images_seen),
                "wall_time_s": round(self.wall_time_s, 2),
                "best_score": best,
            }
        )

    def progress_state(self) -> dict[str, Any]:
        return {
            "images_seen": self.images_seen,
            "wall_time_s": self.wall_time_s,
            "budget_stopped": self.budget_stopped,
            "progress": list(self.progress),
        }

    def load_progress_state(self, state: dict[str, Any]) -> None:
        self.images_seen = int(state["images_seen"])
        self.spent_before_s = float(state["wall_time_s"]) - (time.monotonic() - self.started_at)
        self.budget_stopped = state.get("budget_stopped")
        self.progress[:] = list(state.get("progress", []))

    def search_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_search_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {"search": self.search_state(), "progress": self.progress_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore(self, checkpoint)


class SearchModule(SearchProgress, pl.LightningModule):
    """A search as a LightningModule: ``units`` units of work, one per epoch.

    Subclasses implement :meth:`run_unit`, :meth:`search_state` / :meth:`load_search_state`, and
    optionally :meth:`record_files` and :meth:`unit_line`. ``images_seen`` must count the
    training or scoring images the units used (the budget reads it).
    """

    #: What a unit is called in the log (``round``, ``generation``, ``architecture``).
    unit_name = "unit"

    def __init__(self, units: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.units = int(units)
        self.start_clock()

    def run_unit(self, index: int) -> None:
        raise NotImplementedError

    def best_score(self) -> float | None:
        """The best held-out score the search has measured so far, by its own measure (None: none
        yet); recorded after every unit in ``progress.csv``."""
        return None

    def record_files(self) -> dict[str, tuple[Sequence[str], list[dict[str, Any]]]]:
        """``{file name: (columns, rows)}`` rewritten in the run directory after every unit."""
        return {}

    def unit_line(self) -> str | None:
        """The unit's line in ``run.log`` (None: the generic epoch line)."""
        return None

    def replicated_state(self) -> Any:
        """What every rank must hold identically after a unit (a controller, a population); None:
        nothing to check."""
        return None

    def on_train_epoch_end(self) -> None:
        """Under DDP, stop at once if the ranks' replicated state has diverged: every later unit
        would pair up different searches."""
        state = self.replicated_state()
        if state is None or self.trainer.world_size == 1:
            return
        digests = all_gather(state_digest(state))
        if len(set(digests)) > 1:
            raise RuntimeError(
                f"the ranks' search states differ after {self.unit_name} {self.current_epoch} "
                f"(digests {digests}): a rank trained or scored differently"
            )

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.run_unit(self.current_epoch)
        self.record_progress(self.current_epoch, self.best_score())

    def configure_optimizers(self) -> None:
        """Each search optimises what it owns (the controller's Adam) itself."""
        return None


def state_digest(state: Any) -> str:
    """A SHA-256 of nested tensors, arrays, numbers and strings: equal exactly when the contents
    are bitwise equal."""
    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(
                value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b""
            )
        elif isinstance(value, np.ndarray):
            digest.update(str((value.dtype, value.shape)).encode() + np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(str(key).encode())
                walk(value[key])
        elif isinstance(value, list | tuple):
            digest.update(f"[{len(value)}".encode())
            for item in value:
                walk(item)
        else:
            digest.update(repr(value).encode())

    walk(state)
    return digest.hexdigest()


def restore(module: SearchProgress, checkpoint: dict[str, Any]) -> None:
    """Load a search checkpoint's state into ``module``."""
    state = checkpoint.get(STATE_KEY)
    if state is None:
        from segnas.errors import ConfigError

        raise ConfigError("resume: the checkpoint holds no search state (written by another searcher or task?)")
    module.load_search_state(state["search"])
    module.load_progress_state(state["progress"])


class SearchBudget(Callback):
    """Stops ``fit`` once ``budget`` is spent, checked after every batch (every unit, for unit
    modules; so the unit that started is finished and the first always runs). Rank 0's clock and
    count decide for every rank, which must stop together; the reason lands in the module's
    ``budget_stopped``."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.budget.limited:
            return
        reason = trainer.strategy.broadcast(self.budget.exhausted(pl_module.wall_time_s, pl_module.images_seen))
        if reason:
            log.info("stopping the search: %s", reason)
            pl_module.budget_stopped = reason
            trainer.should_stop = True


class RecordFiles(Callback):
    """Rewrites the module's :meth:`SearchModule.record_files` in ``run_dir`` on rank 0 after
    every unit (atomically: a crash leaves the previous unit's files)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.is_global_zero:
            files = pl_module.record_files() if hasattr(pl_module, "record_files") else {}
            for name, (columns, rows) in {**files, PROGRESS_FILE: (PROGRESS_COLUMNS, pl_module.progress)}.items():
                write_csv(self.run_dir / name, columns, rows)


class UnitCheckpoint(Callback):
    """``last.ckpt`` after every unit, through ``Trainer.save_checkpoint`` (so ``ckpt_path`` resumes
    it), written to a temporary file first: a crash while saving leaves the previous unit's. A
    unit module takes no optimiser step Lightning counts, which Lightning's ``ModelCheckpoint``
    needs to see before it saves again."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(temporary, weights_only=False)
        if trainer.is_global_zero:
            os.replace(temporary, self.path)


@dataclass(frozen=True)
class TrainingData:
    """What a search module that trains on data (the Auto-DeepLab supernet) is fitted on, one
    epoch per unit: ``train`` (a loader, or a dict of loaders each step takes one batch of each
    of), at most ``batches`` of its batches per epoch (None: all), then ``val``."""

    train: Any
    val: DataLoader
    batches: int | None = None


Search = TypeVar("Search", bound=SearchProgress)


def fit_search(
    context: SearchContext,
    make_module: Callable[[int], Search],
    callbacks: Sequence[Callback] = (),
    data: TrainingData | None = None,
) -> tuple[pl.Trainer, Search]:
    """``Trainer.fit`` of the module ``make_module(world_size)`` builds, one unit per epoch for its
    ``units``, resuming from ``context.resume`` (a checkpoint this engine wrote), with the budget,
    the record files and ``last.ckpt`` after every unit. Under a spawning strategy the search ran
    in other processes: its state is read back from the ``last.ckpt`` they wrote.

    Without ``data`` the module is a :class:`SearchModule`, a unit one batch of
    :func:`unit_loader` with no validation. With ``data`` it is a :class:`SearchProgress` module
    trained on ``data`` as any network is trained (the ``trainer.*`` settings but the epochs and
    batches, the validation images drawn as for every trained network)."""
    if data is None:
        loops: dict[str, Any] = {
            "max_steps": -1,
            "limit_train_batches": 1,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "enable_model_summary": False,
        }
        train, val, drawn = unit_loader(), None, []
    else:
        loops = {"limit_train_batches": data.batches or 1.0}
        train, val = data.train, data.val
        drawn = [ValidationImages(context.run_dir, context.datamodule, context.train.log_images)]
    # last.ckpt is the search's one checkpoint: Lightning's default one would save the supernet in
    # the logger's folder too
    trainer = context.search_trainer(
        context.run_dir,
        callbacks=[
            SearchBudget(context.budget),
            RecordFiles(context.run_dir),
            UnitCheckpoint(context.run_dir / "last.ckpt"),
            *drawn,
            *callbacks,
        ],
        enable_checkpointing=False,
        **loops,
    )
    module = make_module(trainer.world_size)
    trainer.fit_loop.max_epochs = module.units
    trainer.fit(
        module, train_dataloaders=train, val_dataloaders=val, ckpt_path=str(context.resume) if context.resume else None
    )
    if isinstance(trainer.strategy, SearchStrategy) and trainer.strategy.spawns:
        restore(module, torch.load(context.run_dir / "last.ckpt", map_location="cpu", weights_only=False))
    return trainer, module
