"""``searcher=fmas``: the schema of conf/searcher/fmas.yaml, checked before the supernet is
obtained (training it takes minutes).

What needs the supernet (a space with no choices, a checkpoint of another space) or the data
(its class count against the supernet's, enough val images to report on) is checked once they
are loaded.
"""

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from segnas.searchers.contract import FinetuneSettings, SearcherSettings
from segnas.settings import base
from segnas.settings.base import Choice
from segnas.settings.run import RunSettings, Task

#: Accuracy objectives: float32 mIoU (the sub-network in torch) and int8 mIoU (the same
#: sub-network after post-training quantization, as an int8 device runs it; :mod:`.int8`).
ACCURACY = ("miou", "miou_int8")
COSTS = ("params", "macs", "latency")
OBJECTIVES = (*ACCURACY, *COSTS)
#: What int8 scoring imports (the ``segnas[onnx]`` extra).
INT8_PACKAGES = ("onnx", "onnxruntime")


class ChannelOrder(Choice):
    """Keep the first hidden channels as trained, or sort them by L1 norm first."""

    first = "first"
    l1 = "l1"


class Proposals(Choice):
    """How a generation's sub-networks are proposed: NSGA-II, or uniformly (FMAS's random
    baseline, run as ``searcher=random searcher.space=fmas``)."""

    nsga2 = "nsga2"
    random = "random"


@dataclass
class ConstraintSettings:
    """Limits checked before scoring (null = none); latency in the hardware target's milliseconds."""

    max_params: float | None = None
    max_macs: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        base.positive(self, "max_params", "max_macs", "max_latency_ms")

    def limits(self) -> dict[str, float]:
        """``{record field: limit}`` of the limits that are set."""
        return {
            record: float(limit)
            for record, limit in (
                ("params", self.max_params),
                ("macs", self.max_macs),
                ("latency_ms", self.max_latency_ms),
            )
            if limit is not None
        }


@dataclass
class FMASSettings(SearcherSettings):
    """Supernet, space of sub-networks, scoring, objectives and limits, NSGA-II, fine-tuning."""

    name: str = "fmas"
    retrain_epochs: int = 3
    backbone_weights: str | None = "auto"
    #: a trained DeepLabV3+ (task=train's last.ckpt, a model.pt or a run dir); null = train it here
    supernet: str | None = None
    supernet_arch: str = "deeplabv3plus-mobilenetv2"
    supernet_epochs: int = 3
    channel_order: ChannelOrder = ChannelOrder.l1
    width_ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    head_ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    min_depth: int = 1
    val_images: int = 32
    calib_images: int = 32
    recalibrate_bn: bool = True
    #: validation images per forward when scoring; null = every image of one size at once
    score_batch_size: int | None = 32
    device: str = "auto"
    objectives: list[str] = field(default_factory=lambda: ["miou", "macs"])
    constraints: ConstraintSettings = field(default_factory=ConstraintSettings)
    #: [H, W] at which MACs and latency are priced and miou_int8's network exported; null = data.crop_size square
    input_size: list[int] | None = None
    hv_reference: float = 1.1
    #: nsga2 only: uniform proposals are FMAS's random baseline, searcher=random searcher.space=fmas
    algorithm: Proposals = Proposals.nsga2
    pop_size: int = 12
    generations: int = 6
    seed: int = 0
    crossover_prob: float = 0.9
    #: per-gene mutation probability; null = 1 / number of genes
    mutation_prob: float | None = None
    #: front members handed on; null = the whole front
    top_k: int | None = None
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.algorithm != Proposals.nsga2:
            base.fail(
                "algorithm",
                "nsga2: FMAS's random baseline (uniform proposals at FMAS's budget) is "
                "searcher=random searcher.space=fmas",
                self.algorithm,
            )
        base.existing(self, "supernet", "checkpoint of a task=train run (.ckpt, model.pt or run dir)")
        if not self.supernet_arch:
            base.fail(
                "supernet_arch",
                "a DeepLabV3+ preset (e.g. deeplabv3plus-mobilenetv2) or a genotype file",
                self.supernet_arch,
            )
        base.at_least(self, "supernet_epochs", 0)
        base.fractions(self, "width_ratios")
        base.fractions(self, "head_ratios")
        base.positive(self, "min_depth", "val_images", "calib_images", "score_batch_size")
        base.device(self, "device")
        base.distinct(self, "objectives", OBJECTIVES)
        if not set(ACCURACY) & set(self.objectives) or not set(COSTS) & set(self.objectives):
            base.fail("objectives", "miou and/or miou_int8, and at least one of params, macs, latency", self.objectives)
        missing = [name for name in INT8_PACKAGES if importlib.util.find_spec(name) is None]
        if self.needs_int8() and missing:  # before the supernet trains, not at the first candidate
            base.fail(
                "objectives",
                f"no miou_int8 without {' and '.join(missing)} (int8 scoring quantizes with ONNX Runtime): "
                "pip install 'segnas[onnx]'",
                self.objectives,
            )
        base.size(self, "input_size")
        base.between(self, "hv_reference", above=1.0)
        base.positive(self, "pop_size")
        base.positive(self, "generations")
        base.between(self, "crossover_prob", 0.0, 1.0)
        base.between(self, "mutation_prob", 0.0, 1.0)
        base.between(
            self,
            "top_k",
            1,
            self.pop_size,
            why=f"front members handed on, at most pop_size={self.pop_size}; null: the whole front",
        )

    @property
    def ordered_objectives(self) -> list[str]:
        """The accuracy objectives first (miou, then miou_int8), then the costs as given: the search
        minimises 1 - mIoU against the costs after it, and the first is what "best" means."""
        return [*[o for o in ACCURACY if o in self.objectives], *[o for o in self.objectives if o in COSTS]]

    def needs_int8(self) -> bool:
        """Whether every scored sub-network is also quantized and scored in int8."""
        return "miou_int8" in self.objectives

    def needs_latency(self) -> bool:
        """Whether candidates are timed: latency is an objective or limited (a hardware target is
        then required, :meth:`check_run`)."""
        return "latency" in self.objectives or self.constraints.max_latency_ms is not None

    def priced_size(self, crop_size: int) -> tuple[int, int]:
        """(H, W) at which MACs and latency are priced and the int8 network is exported (the size
        the device runs): ``input_size``, else the crop square."""
        return (self.input_size[0], self.input_size[1]) if self.input_size else (crop_size, crop_size)

    def check_run(self, run: RunSettings) -> None:
        """A latency objective or limit needs a hardware target; without a supernet one is trained
        here (unless a resumed run already did); a table (``task=tabulate``) holds float32 scores
        only, so it is not scored in int8 for nothing."""
        if self.needs_latency() and run.hardware is None:
            base.fail(
                "objectives",
                "no latency objective or limit (searcher.constraints.max_latency_ms) without a "
                "hardware target: pick hardware=cpu, onnx_cpu, onnx_cpu_int8 or gap8",
                self.objectives,
            )
        if self.needs_int8() and run.task == Task.tabulate:
            base.fail(
                "objectives",
                "no miou_int8 with task=tabulate: a table holds float32 scores (and replays search on them)",
                self.objectives,
            )
        if run.searcher is self:  # FMAS itself proposes by NSGA-II (its random baseline samples uniformly)
            base.at_least(self, "pop_size", 2, why="NSGA-II needs two parents")
        trained_before = Path(run.run_dir) / "supernet" / "model.pt"
        if self.supernet is None and self.supernet_epochs < 1 and not trained_before.is_file():
            base.fail(
                "supernet_epochs",
                "a positive integer (with supernet=null the supernet is trained here; or give supernet=<checkpoint>)",
                self.supernet_epochs,
            )
