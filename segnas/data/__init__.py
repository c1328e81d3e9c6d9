"""Datasets as LightningDataModules: the offline synthetic default and real-data folders.

Every module derives from :class:`SegmentationDataModule`, which owns the transforms, loaders
and the seeded derived splits (``train_halves``, ``val_subset``, ``calib_subset``).
"""

from segnas.data.datamodule import SegmentationDataModule
from segnas.data.folders import ADE20KDataModule, CityscapesDataModule, FolderDataModule, VOCDataModule
from segnas.data.synthetic import SyntheticDataModule

__all__ = [
    "ADE20KDataModule",
    "CityscapesDataModule",
    "FolderDataModule",
    "SegmentationDataModule",
    "SyntheticDataModule",
    "VOCDataModule",
]
