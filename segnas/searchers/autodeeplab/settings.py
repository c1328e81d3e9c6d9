"""``searcher=autodeeplab``: the schema of conf/searcher/autodeeplab.yaml."""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from segnas.searchers.contract import SearcherSettings
from segnas.settings import base


@dataclass
class NetworkSettings:
    """The final network built from the decoded cell and path (the Auto-DeepLab space checks these
    labels again when it builds it)."""

    filter_multiplier: int = 8
    aspp_channels: int = 64
    decoder_channels: int = 64
    low_level_channels: int = 24
    #: scheduled drop path while retraining; 1.0 = off
    drop_path_keep_prob: float = 1.0

    def __post_init__(self) -> None:
        base.positive(self, "filter_multiplier", "aspp_channels", "decoder_channels", "low_level_channels")
        base.between(self, "drop_path_keep_prob", above=0.0, high=1.0)


@dataclass
class AutoDeepLabSettings(SearcherSettings):
    """Supernet sizes, schedule, optimisers, memory options and the final network's labels."""

    name: str = "autodeeplab"
    layers: int = 4
    filter_multiplier: int = 4
    blocks: int = 5
    #: per-resolution ASPP width during the search; null: the paper's B*F*s/4
    aspp_channels: int | None = None
    epochs: int = 6
    #: batches of trainA (and of trainB) per epoch; null: the whole half
    batches_per_epoch: int | None = 8
    warmup_epochs: int = 2
    #: validation images scoring the supernet each epoch; null: the whole val split
    val_images: int | None = 16
    weight_optimizer: Any = MISSING
    weight_min_lr: float = 0.001
    arch_optimizer: Any = MISSING
    recompute: bool = False
    checkpoint_cells: bool = False
    channels_last: bool = False
    #: PC-DARTS partial channels (an approximation; 1 = off)
    partial_channels: int = 1
    network: NetworkSettings = field(default_factory=NetworkSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(
            self,
            "layers",
            "filter_multiplier",
            "blocks",
            "aspp_channels",
            "epochs",
            "batches_per_epoch",
            "val_images",
            "partial_channels",
        )
        base.between(
            self,
            "warmup_epochs",
            0,
            self.epochs - 1,
            why=f"below epochs={self.epochs}, or no architecture step would run",
        )
        base.optimizer(self, "weight_optimizer")
        base.at_least(self, "weight_min_lr", 0.0)
        base.optimizer(self, "arch_optimizer")
        if self.filter_multiplier % self.partial_channels:
            base.fail(
                "partial_channels", f"a divisor of filter_multiplier={self.filter_multiplier}", self.partial_channels
            )
