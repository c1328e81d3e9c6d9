"""The contract between a searcher and the pipeline (``task=search``, ``task=compare``).

A searcher is three things, and adding one touches only these (docs/searchers.md walks through it):

1. **its settings**: a dataclass subclassing :class:`SearcherSettings`, the schema of
   ``conf/searcher/<name>.yaml`` (Hydra checks types and choices while composing; its
   ``__post_init__`` checks ranges and rules between its keys; :meth:`SearcherSettings.check_run`
   the rules between its keys and the shared ones);
2. **its search**: a function ``search(settings, context) -> SearchResult`` in a module of its own
   folder, which reads its own settings and the :class:`SearchContext` the pipeline hands it, and
   nothing else of the config;
3. **one registry line** in :mod:`segnas.searchers.registry` naming both.

What the pipeline reads of a searcher's settings are the fields of :class:`SearcherSettings`
(``name``, ``task_types``, ``retrain_epochs``, ``backbone_weights``); what it gets back is a
:class:`~segnas.searchers.result.SearchResult`: the candidates, best first (with weights to
fine-tune where the search has them, and the schedule to fine-tune them with), the summary
entries, the val images the search scored on (the report then uses the rest of val), and a hook
the pipeline calls once after retraining. The pipeline builds the data module once, writes
``genotype.yaml`` and ``summary.json``, retrains and selects; a searcher writes only its own
record files.

Standard library, omegaconf and the settings layer only: the config check imports this before
torch is loaded (what the context carries is typed for readers, and imported only then).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from segnas.settings import base
from segnas.settings.run import RunSettings, Schedule, TaskType, TrainSettings

if TYPE_CHECKING:
    from segnas.evaluation import EvalProtocol
    from segnas.searchers.budget import Budget
    from segnas.searchers.result import SearchResult


@dataclass
class SearcherSettings:
    """The keys every ``conf/searcher/<name>.yaml`` has: what the pipeline reads of a searcher.

    ``retrain_epochs`` and ``backbone_weights`` are the searcher's defaults of ``retrain.epochs``
    and ``model.backbone_weights`` (``conf/config.yaml`` reads them by interpolation, so the run's
    config.yaml shows the value used)."""

    #: the registry name (:data:`segnas.searchers.registry.SEARCHERS`)
    name: str = "???"
    #: the task_type values this searcher supports
    task_types: list[TaskType] = field(default_factory=lambda: [TaskType.segmentation])
    #: default of retrain.epochs: epochs to retrain (or fine-tune) each returned candidate
    retrain_epochs: int = 8
    #: default of model.backbone_weights: null (random), auto (cached ImageNet file) or a file
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        base.distinct(self, "task_types", tuple(TaskType), empty=False)
        base.at_least(self, "retrain_epochs", 0)
        base.weights(self, "backbone_weights")

    def check_run(self, run: RunSettings) -> None:
        """Rules between this searcher's keys and the run's shared settings (``run.data``,
        ``run.hardware``, ``run.run_dir``...), checked with the config before anything runs;
        raise :class:`~segnas.settings.base.SettingError` with the key relative to ``searcher``."""


@dataclass
class FinetuneSettings:
    """How the pipeline fine-tunes candidates that arrive with weights (a searcher's
    ``finetune`` key, handed back in its result): train.optimizer's lr times ``lr_scale``,
    ``scheduler`` with a linear warm-up over ``warmup_fraction`` of the steps; ``keep_best`` keeps
    the best of the weights before fine-tuning and after each epoch by the held-out train score.
    Training from scratch with train.* would undo the inherited weights."""

    lr_scale: float = 0.1
    scheduler: Schedule = Schedule.cosine
    warmup_fraction: float = 0.1
    keep_best: bool = True

    def __post_init__(self) -> None:
        base.positive(self, "lr_scale")
        base.between(self, "warmup_fraction", 0.0, below=1.0)


@dataclass
class SearchContext:
    """What the pipeline hands a searcher: the shared parts of the run, built once and typed.

    ``datamodule`` is the run's one data module (not yet set up: ``setup`` is idempotent); the
    pipeline reports on it after the search. ``train_module`` / ``trainer`` build the shared
    training module and a Lightning Trainer from the run's ``train.*`` and ``trainer.*`` (for a
    searcher that trains a standalone network, as FMAS its supernet); ``search_trainer`` builds
    the Trainer the engine fits a search module with in a given folder
    (:func:`segnas.searchers.engine.fit_search`; a table's inner search runs in a sub-folder).
    """

    run_dir: Path
    #: the checkpoint to continue the search from, or None
    resume: Path | None
    #: the run's Lightning logger (retraining logs to the same W&B run), or None
    logger: Any
    datamodule: Any
    task_type: TaskType
    seed: int
    budget: "Budget"
    #: how every network is scored (eval.*)
    protocol: "EvalProtocol"
    #: data.crop_size: the default size of crops and of priced inputs
    crop_size: int
    #: model.pretrained / model.backbone_weights: where a built backbone's weights come from
    pretrained: bool
    backbone_weights: str | None
    #: train.*: a searcher that trains sampled networks from scratch uses the shared recipe
    train: TrainSettings
    #: the instantiated hardware target (latency), or None without one
    hardware: Any
    #: (genotype, out channels, network) -> the shared training LightningModule
    train_module: Callable[..., Any]
    #: (out_dir, datamodule, **Trainer overrides) -> a Trainer with the run's checkpoints and logs
    trainer: Callable[..., Any]
    #: (run_dir, callbacks=..., **Trainer overrides) -> the Trainer a search module is fitted with
    search_trainer: Callable[..., Any]

    @property
    def out_channels(self) -> int:
        """The networks' output channels: the class count, or 1 for depth."""
        return 1 if self.task_type == TaskType.depth else int(self.datamodule.num_classes)


class Search(Protocol):
    """A searcher's entry: its typed settings and the context in, the result out."""

    def __call__(self, settings: Any, context: SearchContext) -> "SearchResult": ...
