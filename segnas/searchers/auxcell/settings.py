"""``searcher=auxcell``: the schema of conf/searcher/auxcell.yaml.

The held-out fraction against the size of the training split is checked where the data is
(:meth:`segnas.searchers.auxcell.splits.SearchData.split`), children per round against the
number of ranks once the ranks have joined, and whether CUDA is there when a device is picked.
"""

from dataclasses import dataclass, field
from typing import Any

from segnas.errors import ConfigError
from segnas.searchers.contract import SearcherSettings
from segnas.settings import base
from segnas.settings.base import Choice
from segnas.settings.run import RunSettings, TaskType
from segnas.targets import SCORES


class Policy(Choice):
    """``controller.algorithm``: how the controller learns (uniform: random search)."""

    ppo = "ppo"
    reinforce = "reinforce"
    uniform = "uniform"


class Positions(Choice):
    """``controller.positions``: the cell-position choices (see ``auxcell.decisions``)."""

    extended = "extended"
    released = "released"


class LossResolution(Choice):
    """``stage2.loss_resolution``: the images' labels, or labels resized to the output."""

    labels = "labels"
    output = "output"


@dataclass
class PPOSettings:
    """The authors' PPO (nas-segm-pytorch src/rl/gradient_estimators.py)."""

    clip: float = 0.1
    buffer_size: int = 100
    minibatch_size: int = 1
    epochs: int = 1

    def __post_init__(self) -> None:
        base.between(self, "clip", above=0.0, below=1.0)
        base.positive(self, "buffer_size", "minibatch_size", "epochs")


@dataclass
class ControllerSettings:
    algorithm: Policy = Policy.ppo
    hidden_size: int = 100
    num_layers: int = 2
    lr: float = 1.0e-4
    baseline_decay: float = 0.95
    grad_clip: float = 2.0
    entropy_coef: float = 0.0
    positions: Positions = Positions.extended
    ppo: PPOSettings = field(default_factory=PPOSettings)

    def __post_init__(self) -> None:
        base.positive(self, "hidden_size", "num_layers", "lr", "grad_clip")
        base.between(self, "baseline_decay", 0.0, 1.0)
        base.at_least(self, "entropy_coef", 0.0)


@dataclass
class LossSettings:
    aux_weight: float = 0.15
    aux_cell: bool = True
    kd_weight: float = 0.3

    def __post_init__(self) -> None:
        base.at_least(self, "aux_weight", 0.0)
        base.at_least(self, "kd_weight", 0.0)


@dataclass
class StageSettings:
    """The decoder's Adam, gradient clipping and Polyak decay, shared by both stages."""

    epochs: int = 1
    #: training crop side; null: data.crop_size
    crop_size: int | None = None
    decoder_lr: float = 3.0e-3
    decoder_weight_decay: float = 1.0e-5
    grad_clip: float = 3.0
    #: Polyak averaging decay; null: off
    polyak: float | None = None
    polyak_reference_steps: int | None = None

    def __post_init__(self) -> None:
        base.positive(self, "epochs", "crop_size", "decoder_lr", "grad_clip", "polyak_reference_steps")
        base.at_least(self, "decoder_weight_decay", 0.0)
        base.between(self, "polyak", 0.0, below=1.0)


@dataclass
class Stage1Settings(StageSettings):
    """Decoder only, on cached frozen-encoder features."""

    cache: bool = True
    cache_device: str = "auto"
    num_crops: int = 64
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        base.device(self, "cache_device")
        base.positive(self, "num_crops")
        base.at_least(self, "batch_size", 2, why="BatchNorm after global pooling needs two images")


@dataclass
class Stage2Settings(StageSettings):
    """End to end on images."""

    enabled: bool = True
    #: batches per epoch; null: the whole train split (minus the held-out part)
    max_batches: int | None = None
    loss_resolution: LossResolution = LossResolution.labels
    encoder_lr: float = 1.0e-3
    encoder_momentum: float = 0.9
    encoder_weight_decay: float = 1.0e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(self, "max_batches", "encoder_lr")
        base.between(self, "encoder_momentum", 0.0, below=1.0)
        base.at_least(self, "encoder_weight_decay", 0.0)


@dataclass
class EarlyStoppingSettings:
    """Progressive: stage 2 only for children whose stage-1 reward is good enough."""

    enabled: bool = True
    initial: float = 0.01
    tolerance: float = 0.9
    decay: float = 0.99
    #: [checks, tolerance factor] pairs
    schedule: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("initial", "tolerance", "decay"):
            base.between(self, key, 0.0, 1.0)
        if not all(
            isinstance(entry, list)
            and len(entry) == 2
            and float(entry[0]).is_integer()
            and entry[0] >= 0
            and 0 < entry[1] <= 1
            for entry in self.schedule
        ):
            base.fail(
                "schedule",
                "a list of [checks, tolerance factor] pairs: an integer >= 0 and a number in (0, 1]",
                self.schedule,
            )


@dataclass
class RewardSettings:
    #: geometric mean of these (segmentation)
    metrics: list[str] = field(default_factory=lambda: ["mIoU", "fwIoU", "mean_class_acc"])
    #: classes left out of the class means (segmentation)
    omit_classes: list[int] = field(default_factory=lambda: [0])
    #: geometric mean of these (task_type=depth)
    depth_metrics: list[str] = field(default_factory=lambda: ["delta1", "RMSE"])
    holdout: float = 0.1
    holdout_min: int = 8
    #: held-out images' shorter side and centre crop; null: data.crop_size
    crop_size: int | None = None

    def __post_init__(self) -> None:
        base.distinct(self, "metrics", SCORES[TaskType.segmentation])
        base.distinct(self, "depth_metrics", SCORES[TaskType.depth])
        if len(set(self.omit_classes)) != len(self.omit_classes) or min(self.omit_classes, default=0) < 0:
            base.fail("omit_classes", "a list of distinct class ids >= 0, e.g. [0] or []", self.omit_classes)
        base.between(self, "holdout", 0.0, below=1.0)
        base.at_least(
            self, "holdout_min", 0 if self.holdout > 0 else 1, why="with holdout=0 it is the number of held-out images"
        )
        base.positive(self, "crop_size")

    def metrics_for(self, task_type: TaskType) -> tuple[str, ...]:
        """The scores the reward is the geometric mean of, for ``task_type``."""
        return tuple(self.depth_metrics if task_type == TaskType.depth else self.metrics)


@dataclass
class AuxCellSettings(SearcherSettings):
    """Children, controller, losses, both training stages, early stopping and the reward."""

    name: str = "auxcell"
    task_types: list[TaskType] = field(default_factory=lambda: [TaskType.segmentation, TaskType.depth])
    children: int = 6
    #: children sampled from one controller state; null: one per DDP rank
    children_per_round: int | None = None
    device: str = "auto"
    top_k: int = 1
    backbone: str = "mobilenetv2_100"
    #: checkpoint of a task=train run; null: no distillation
    teacher: str | None = None
    width: int = 48
    sep_repeats: int = 1
    calibrate_batches: int = 8
    #: random scale of both stages' training crops; null: data.scale_range
    scale_range: list[float] | None = None
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    stage1: Stage1Settings = field(default_factory=Stage1Settings)
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    stage2: Stage2Settings = field(default_factory=Stage2Settings)
    reward: RewardSettings = field(default_factory=RewardSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(self, "children", "children_per_round", "width", "sep_repeats")
        base.device(self, "device")
        base.between(self, "top_k", 1, self.children, why=f"at most children={self.children}")
        if not self.backbone:
            base.fail("backbone", "the name of a timm encoder, e.g. mobilenetv2_100", self.backbone)
        base.existing(self, "teacher", "checkpoint of a task=train run (.ckpt, model.pt or run dir)")
        base.at_least(self, "calibrate_batches", 0)
        if self.scale_range is not None and not (
            len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1]
        ):
            base.fail("scale_range", "null (data.scale_range) or [low, high] with 0 < low <= high", self.scale_range)

    def check_run(self, run: RunSettings) -> None:
        """Stage 2 trains on data.batch_size images; the omitted classes exist in the data."""
        data = run.data
        if self.stage2.enabled and data is not None and data.batch_size < 2:
            raise ConfigError(
                f"data.batch_size={data.batch_size}: expected an integer >= 2 (stage 2 "
                "(searcher.stage2.enabled=true) trains on data.batch_size images: BatchNorm after "
                "global pooling needs two)"
            )
        if data is not None and any(c >= data.num_classes for c in self.reward.omit_classes):
            base.fail(
                "reward.omit_classes",
                f"class ids in [0, {data.num_classes}) (data.num_classes)",
                self.reward.omit_classes,
            )
