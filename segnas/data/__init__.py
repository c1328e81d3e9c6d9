"""Datasets as LightningDataModules: the offline synthetic default, real-data folders and
NYU Depth V2 (depth only).

Every module derives from :class:`SegmentationDataModule`, which owns the transforms, loaders
and the seeded derived splits (``train_halves``, ``val_subset``, ``calib_subset``).
"""

from segnas.data.datamodule import SegmentationDataModule
from segnas.data.folders import ADE20KDataModule, CityscapesDataModule, FolderDataModule, VOCDataModule
from segnas.data.nyu_depth import NYUDepthDataModule
from segnas.data.synthetic import SyntheticDataModule

__all__ = [
    "ADE20KDataModule",
    "CityscapesDataModule",
    "FolderDataModule",
    "NYUDepthDataModule",
    "SegmentationDataModule",
    "SyntheticDataModule",
    "VOCDataModule",
]
