"""The search's data: a seeded held-out part of train to score children, the rest to train them.

The paper scores children on a held-out part of the training set, so the validation split stays
untouched for the retrained winners. Training loaders are epoch seeded: epoch ``e`` of a loader
is the same order and augmentation whenever it is replayed, so every child's stage 2 sees the
same batches, and a child's result does not depend on which children trained before it, in
this process or on this rank. Each stage may train at its own crop size (the authors: 256 px in
stage 1, 350 px in stage 2) and the search at its own scale range (theirs: 0.7-1.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader

from segnas.data.datamodule import SegmentationDataModule, SegmentationDataset
from segnas.data.epoch_seeded import epoch_seeded_loader
from segnas.errors import ConfigError

_HOLDOUT_STREAM = 41


@dataclass
class SearchData:
    """``train``: the training part at ``data.crop_size`` crops and the search's scale range;
    ``holdout``: the part children are scored on."""

    train: SegmentationDataset
    holdout: SegmentationDataset
    datamodule: SegmentationDataModule
    scale_range: tuple[float, float] | None = None

    @classmethod
    def split(
        cls,
        datamodule: SegmentationDataModule,
        fraction: float,
        minimum: int,
        seed: int,
        crop_size: int | None = None,
        scale_range: Sequence[float] | None = None,
    ) -> SearchData:
        """``holdout``: a seeded ``fraction`` (at least ``minimum`` images) of train as
        ``crop_size`` centre crops (default ``data.crop_size``; see ``datamodule.centre_crops``);
        the rest trains with ``scale_range`` (default ``data.scale_range``)."""
        datamodule.setup()
        total = len(datamodule.source("train"))
        count = max(minimum, round(fraction * total))
        if not 0 < count <= total - datamodule.batch_size:
            raise ConfigError(
                f"searcher.reward.holdout={fraction} (at least searcher.reward.holdout_min={minimum}) holds out "
                f"{count} of {total} training images, leaving fewer than data.batch_size={datamodule.batch_size} "
                "to train on"
            )
        order = np.random.default_rng([seed, _HOLDOUT_STREAM]).permutation(total)
        scales = None if scale_range is None else (scale_range[0], scale_range[1])
        return cls(
            train=datamodule.train_crops(datamodule.crop_size, scales, order[count:].tolist()),
            holdout=datamodule.centre_crops("train", crop_size or datamodule.crop_size, order[:count].tolist()),
            datamodule=datamodule,
            scale_range=scales,
        )

    def train_loader(
        self,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        key: str = "searcher.stage1.batch_size",
        crop_size: int | None = None,
    ) -> DataLoader:
        """Epoch-seeded shuffle and augmentation at ``crop_size`` crops (default
        ``data.crop_size``), full batches only (BatchNorm of pooling ops needs two or more);
        ``key`` names the batch size's setting in the error."""
        if len(self.train) < batch_size:
            raise ConfigError(
                f"{key}={batch_size} exceeds the {len(self.train)} training images left after the held-out part"
            )
        dataset = (
            self.train
            if crop_size is None
            else self.datamodule.train_crops(crop_size, self.scale_range, self.train.indices)
        )
        return epoch_seeded_loader(dataset, seed, batch_size, num_workers)
