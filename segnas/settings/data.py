"""The schemas of ``conf/data/*.yaml``: one dataclass per data module, its keys the module's
constructor arguments (Hydra instantiates ``data._target_`` with them). The data module checks
what needs the files (folders, split lists, masks) when it is set up; the ranges here are checked
before anything is read."""

from dataclasses import dataclass, field

from segnas.settings import base


@dataclass
class DataSettings:
    """What every data module takes."""

    _target_: str = "???"
    name: str = "???"
    #: the dataset's folder (null for generated data)
    root: str | None = None
    num_classes: int = 2
    crop_size: int = 512
    batch_size: int = 8
    #: null: batch_size
    eval_batch_size: int | None = None
    num_workers: int = 0
    #: random scale of the training crops, [low, high]
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    seed: int = 0

    def __post_init__(self) -> None:
        base.at_least(self, "num_classes", 2)
        base.positive(self, "crop_size", "batch_size", "eval_batch_size")
        base.at_least(self, "num_workers", 0)
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            base.fail("scale_range", "[low, high] with 0 < low <= high", self.scale_range)


@dataclass
class SyntheticSettings(DataSettings):
    """Generated scenes (segnas.data.SyntheticDataModule)."""

    image_size: int | None = None
    train_size: int = 512
    val_size: int = 128
    #: keep generated samples in memory
    cache: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(self, "image_size", "train_size", "val_size")


@dataclass
class VOCSettings(DataSettings):
    """PASCAL VOC 2012 and other data in its layout."""

    class_names: list[str] | None = None
    train_split: str = "train"
    val_split: str = "val"
    mask_dir: str = "SegmentationClass"


@dataclass
class CityscapesSettings(DataSettings):
    #: training images resized on read (val stays at full resolution)
    image_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        base.between(self, "image_scale", above=0.0, high=4.0)


@dataclass
class ADE20KSettings(DataSettings):
    pass


@dataclass
class FolderSettings(DataSettings):
    """A user's own images, masks and split lists."""

    class_names: list[str] | None = None
    image_dir: str = "images"
    mask_dir: str = "masks"
    split_dir: str = "splits"


@dataclass
class NYUDepthSettings(DataSettings):
    """NYU Depth V2, labeled release (task_type=depth)."""

    file: str = "nyu_depth_v2_labeled.mat"
    split_file: str = "splits.mat"
    image_scale: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        base.between(self, "image_scale", above=0.0, high=4.0)


#: ``conf/data/<name>.yaml`` -> its schema.
DATA = {
    "synthetic": SyntheticSettings,
    "voc": VOCSettings,
    "cityscapes": CityscapesSettings,
    "ade20k": ADE20KSettings,
    "folder": FolderSettings,
    "nyu_depth": NYUDepthSettings,
}
