"""The schema of ``conf/config.yaml``'s own keys: the task, what it predicts, and the settings
every task shares (``train``, ``retrain``, ``eval``, ``budget``, ``profile``, ``tabulate``,
``replay``, ``quantize``, ``model``). The groups (``data``, ``searcher``, ``hardware``) have schemas of their
own; ``trainer`` (Lightning's Trainer arguments), ``logger`` and ``compare`` stay plain nodes.
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from segnas.settings import base
from segnas.settings.base import Choice


class Task(Choice):
    search = "search"
    train = "train"
    eval = "eval"
    profile = "profile"
    compare = "compare"
    tabulate = "tabulate"
    replay = "replay"
    quantize = "quantize"


class TaskType(Choice):
    """What the networks predict: class scores, or one channel of depth in metres."""

    segmentation = "segmentation"
    depth = "depth"


class Schedule(Choice):
    """``train.scheduler``, stepped every optimiser step (:mod:`segnas.training.schedules`)."""

    poly = "poly"
    cosine = "cosine"
    constant = "constant"


class Selection(Choice):
    """``retrain.selection``: what picks the winner among retrained candidates."""

    holdout = "holdout"
    val = "val"


class Split(Choice):
    """``eval.split``: what ``task=eval`` scores."""

    val = "val"
    train = "train"


class EvalMode(Choice):
    """``eval.mode``: whole images, sliding windows, or the dataset's own protocol."""

    whole = "whole"
    slide = "slide"
    auto = "auto"


@dataclass
class ModelSettings:
    """Initial backbone weights (not part of the architecture)."""

    pretrained: bool = False
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        base.weights(self, "backbone_weights")


@dataclass
class TrainSettings:
    """What every task that trains a network from scratch shares."""

    optimizer: Any = MISSING
    scheduler: Schedule = Schedule.poly
    poly_power: float = 0.9
    min_lr: float = 0.0
    warmup_fraction: float = 0.0
    log_images: int = 4

    def __post_init__(self) -> None:
        base.optimizer(self, "optimizer")
        base.positive(self, "poly_power")
        base.at_least(self, "min_lr", 0.0)
        base.between(self, "warmup_fraction", 0.0, below=1.0)
        base.at_least(self, "log_images", 0)


@dataclass
class BudgetSettings:
    """``task=search`` stops when either is spent (null: no limit)."""

    wall_time_s: float | None = None
    images: int | None = None

    def __post_init__(self) -> None:
        base.positive(self, "wall_time_s", "images")


@dataclass
class RetrainSettings:
    epochs: int = 8
    selection: Selection = Selection.holdout
    holdout: float = 0.1

    def __post_init__(self) -> None:
        base.at_least(self, "epochs", 0)
        base.between(self, "holdout", above=0.0, below=1.0)


@dataclass
class EvalSettings:
    split: Split = Split.val
    mode: EvalMode = EvalMode.auto
    #: an integer or [h, w]; null: data.crop_size
    window: Any = None
    #: an integer or [h, w]; null: two thirds of the window
    stride: Any = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        for key in ("window", "stride"):
            value = getattr(self, key)
            pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
            if value is not None and not (
                isinstance(pair, list)
                and len(pair) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
            ):
                base.fail(key, "null, a positive integer or [h, w]", value)
        base.positive(self, "scale")


@dataclass
class ProfileSettings:
    input_size: list[int] = field(default_factory=lambda: [512, 512])

    def __post_init__(self) -> None:
        base.size(self, "input_size")


@dataclass
class TabulateSettings:
    max_architectures: int = 10000
    chunk: int = 32
    children: int = 300
    architectures: int = 300
    steps: int = 40
    from_run: str | None = None
    surrogate_holdout: float = 0.2

    def __post_init__(self) -> None:
        base.positive(self, "max_architectures", "chunk", "steps")
        base.at_least(self, "children", 10)
        base.at_least(self, "architectures", 10)
        base.existing(self, "from_run", "finished task=search run directory (its search.csv)")
        base.between(self, "surrogate_holdout", above=0.0, below=1.0)


@dataclass
class ReplaySettings:
    table: str | None = None
    seeds: int = 200
    first_seed: int = 0
    evaluations: int | None = None
    algorithms: list[str] | None = None
    level: float = 0.95
    workers: int | None = None

    def __post_init__(self) -> None:
        base.existing(self, "table", "task=tabulate run directory")
        base.positive(self, "seeds", "evaluations", "workers")
        base.at_least(self, "first_seed", 0)
        base.between(self, "level", above=0.0, below=1.0)


class Calibration(Choice):
    """``quantize.calibration``: how activation ranges are set from the calibration images."""

    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class KeepFloat(Choice):
    """``quantize.mode``: ``manual`` keeps ``keep_float``'s layers in float; ``auto`` adds the most
    sensitive layers to them until the mIoU drop is within ``max_drop``."""

    manual = "manual"
    auto = "auto"


@dataclass
class QuantizeSettings:
    """int8 post-training quantization (``task=quantize``; every retrained winner when
    ``in_summary``)."""

    #: the deployment size the network is exported and timed at; null: the val images' size (the first one's)
    input_size: list[int] | None = None
    calib_images: int = 32
    calibration: Calibration = Calibration.minmax
    per_channel: bool = True
    reduce_range: bool = False
    keep_float: list[str] = field(default_factory=list)
    mode: KeepFloat = KeepFloat.manual
    #: auto: the largest mIoU drop (float32 - int8) allowed on the selection images
    max_drop: float = 0.01
    #: auto: held-out train images (eval transform, none of the calibration's) the drop is judged on
    select_images: int = 32
    #: write sensitivity.csv: each compute layer's output error when only it is quantized
    sensitivity: bool = False
    #: val images both networks are scored on (null: all)
    val_images: int | None = None
    threads: int = 2
    opset: int = 17
    #: task=search / task=train: quantize the winner too and add its int8 numbers to summary.json
    in_summary: bool = True

    def __post_init__(self) -> None:
        if self.input_size is not None:
            base.size(self, "input_size")
        base.positive(self, "calib_images", "select_images", "val_images", "threads")
        base.between(self, "max_drop", 0.0, 1.0)
        base.at_least(self, "opset", 13, "(per-channel QDQ needs opset 13)")


@dataclass
class RunSettings:
    """``conf/config.yaml``: the task and the settings every task shares. The groups are composed
    with their own schemas and built by :func:`segnas.settings.load`."""

    task: Task = Task.search
    task_type: TaskType = TaskType.segmentation
    #: a preset name or the path of a genotype.yaml
    arch: str | None = None
    #: task=eval: a .ckpt, a model.pt or a run directory
    checkpoint: str | None = None
    #: true: continue in hydra.run.dir; a run dir or .ckpt: continue that run into a new dir
    resume: Any = None
    seed: int = 0
    model: ModelSettings = field(default_factory=ModelSettings)
    run_dir: str = ""
    train: TrainSettings = field(default_factory=TrainSettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    tabulate: TabulateSettings = field(default_factory=TabulateSettings)
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    quantize: QuantizeSettings = field(default_factory=QuantizeSettings)
    # the groups, each with a schema of its own where segnas ships one
    data: Any = None
    searcher: Any = None
    hardware: Any = None
    trainer: Any = None
    logger: Any = None
    compare: Any = None
