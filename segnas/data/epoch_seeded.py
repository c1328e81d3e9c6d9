"""Shuffling and augmentation that depend only on (seed, epoch, sample), so a run resumed from
a checkpoint sees exactly the batches the uninterrupted run would have seen.

The sampler encodes the epoch into the index it yields (``epoch · len + i``) and the dataset
decodes it and reseeds the augmentation for that sample, which works the same in the main
process and in DataLoader workers (persistent or not). Lightning calls ``set_epoch`` on the
sampler at the start of every epoch, including the first one after a resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from segnas.data.datamodule import SegmentationDataset


class EpochSeededSampler(Sampler[int]):
    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.size) if self.shuffle else range(self.size)
        )
        offset = self.epoch * self.size
        return iter(offset + int(i) for i in order)


class EpochSeededDataset(Dataset):
    """Wraps a SegmentationDataset; index ``epoch · len + i`` gives sample i augmented with a
    random state drawn from (seed, epoch, i)."""

    def __init__(self, dataset: SegmentationDataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        epoch, item = divmod(int(index), len(self.dataset))
        self.dataset.reseed(int(np.random.SeedSequence([self.seed, epoch, item]).generate_state(1)[0]))
        return self.dataset[item]


def epoch_seeded_loader(dataset: SegmentationDataset, seed: int, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A training loader (full batches only) whose order and augmentation depend only on
    (``seed``, epoch, sample): a resumed run, another rank or another candidate trained with the
    same seed sees exactly the same batches."""
    return DataLoader(
        EpochSeededDataset(dataset, seed),
        batch_size=batch_size,
        sampler=EpochSeededSampler(len(dataset), seed),
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def at_epoch(loader: Iterable[Any], epoch: int) -> Iterable[Any]:
    """``loader`` set to replay ``epoch`` (its order and augmentation), when it is a DataLoader
    with an epoch-seeded sampler; any other iterable of batches is returned as it is."""
    if isinstance(getattr(loader, "sampler", None), EpochSeededSampler):
        loader.sampler.set_epoch(epoch)
    return loader
