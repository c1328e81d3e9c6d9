"""The search's data: a seeded held-out part of train to score children, the rest to train them.

The paper scores children on a held-out part of the training set, so the validation split stays
untouched for the retrained winners.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from segnas.data.datamodule import SegmentationDataModule
from segnas.errors import ConfigError

_HOLDOUT_STREAM = 41


@dataclass
class SearchData:
    train: Subset
    holdout: Subset

    @classmethod
    def split(cls, datamodule: SegmentationDataModule, fraction: float, minimum: int, seed: int) -> SearchData:
        datamodule.setup()
        total = len(datamodule.source("train"))
        count = max(int(minimum), round(float(fraction) * total))
        if not 0 < count <= total - datamodule.batch_size:
            raise ConfigError(
                f"searcher.reward.holdout={fraction} (at least searcher.reward.holdout_min={minimum}) holds out "
                f"{count} of {total} training images, leaving fewer than data.batch_size={datamodule.batch_size} to train on"
            )
        order = np.random.default_rng([seed, _HOLDOUT_STREAM]).permutation(total)
        return cls(train=Subset(datamodule.dataset("train"), order[count:].tolist()),
                   holdout=Subset(datamodule.eval_dataset("train"), order[:count].tolist()))

    def train_loader(self, batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:
        """Shuffled, seeded, full batches only (BatchNorm of pooling ops needs two or more)."""
        if len(self.train) < batch_size:
            raise ConfigError(f"searcher.stage1.batch_size={batch_size} exceeds the {len(self.train)} training images")
        return DataLoader(self.train, batch_size=batch_size, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(seed), num_workers=num_workers)
