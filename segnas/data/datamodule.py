"""The LightningDataModule every segnas dataset derives from.

A subclass only says where raw samples come from (:meth:`SegmentationDataModule.build_source`);
this base owns the transforms, the batching rules and the derived splits the searchers need, so
that every dataset gets them identically and deterministically from ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from segnas.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RawSample,
    Sample,
    SegmentationTransform,
    calibration_transform,
    centre_crop_transform,
    eval_transform,
    train_transform,
)
from segnas.errors import ConfigError, DatasetError

SPLITS = ("train", "val")

# Streams of the seed, so that each derived split and augmentation has its own randomness.
_AUG_TRAIN, _AUG_HALF_A, _AUG_HALF_B = 0, 1, 2
_PERM_HALVES, _PERM_VAL, _PERM_CALIB, _PERM_SELECTION, _PERM_QUANTIZE = 10, 11, 12, 13, 14
_AUG_CALIB = 3


class SampleSource(Protocol):
    """Indexable un-transformed samples of one split (see ``transforms.RawSample``).

    Indexing decodes the sample (one decode per load) and raises ``DatasetError`` naming the
    file when it is unreadable or its labels are out of range.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> RawSample: ...


class SegmentationDataset(Dataset):
    """A view of a source (all of it or ``indices``) with one transform applied on load."""

    def __init__(
        self,
        source: SampleSource,
        transform: SegmentationTransform,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.source = source
        self.transform = transform
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.transform(self.source[self.indices[index]])

    def reseed(self, seed: int) -> None:
        """Reset the augmentation random state (called once per DataLoader worker)."""
        self.transform.reseed(seed)


def _init_worker(worker_id: int) -> None:
    """Give each worker its own augmentation stream.

    The worker seed comes from the loader's seeded generator, so augmentations are reproducible
    and differ between workers and between epochs. (Do not touch OpenCV's thread settings here:
    ``cv2.setNumThreads`` in a forked child can deadlock on the parent's pool; see transforms.)
    """
    info = get_worker_info()
    dataset = info.dataset
    while not isinstance(dataset, SegmentationDataset) and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # a torch Subset of one of ours
    if isinstance(dataset, SegmentationDataset):
        dataset.reseed(info.seed)


def pad_collate(samples: Sequence[Sample], ignore_index: int = 255) -> dict[str, Any]:
    """Evaluation batches of whole images of any sizes: each image padded bottom/right to the
    batch's largest (image 0, mask ``ignore_index``, depth 0 and not valid) and its true
    (height, width) in ``size``, so :func:`segnas.evaluation.size_groups` can crop every image
    back before the network sees it and the padding is never predicted or scored."""
    sizes = [tuple(sample["image"].shape[-2:]) for sample in samples]
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    count = len(samples)
    first = samples[0]
    batch: dict[str, Any] = {
        "image": first["image"].new_zeros(count, first["image"].shape[0], height, width),
        "mask": first["mask"].new_full((count, height, width), ignore_index),
        "name": [sample["name"] for sample in samples],
        "size": torch.tensor(sizes, dtype=torch.long),
    }
    if "depth" in first:
        batch["depth"] = first["depth"].new_zeros(count, 1, height, width)
        batch["depth_valid"] = first["depth_valid"].new_zeros(count, 1, height, width)
    for index, (sample, (h, w)) in enumerate(zip(samples, sizes)):
        for key in ("image", "mask", "depth", "depth_valid"):
            if key in batch:
                batch[key][index, ..., :h, :w] = sample[key]
    return batch


def default_palette(num_classes: int) -> np.ndarray:
    """The VOC colour map (bits of the class id spread over R, G, B), uint8 (num_classes, 3)."""
    ids = np.arange(num_classes)
    palette = np.zeros((num_classes, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def _seed_stream(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _positive(value: int, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class SegmentationDataModule(pl.LightningDataModule):
    """Base of every segnas dataset: transforms, loaders and seeded derived splits.

    Subclasses implement :meth:`build_source`. Samples are dicts: ``image`` float32 (3, H, W),
    ``mask`` int64 (H, W) with ids in ``[0, num_classes)`` and ``ignore_index`` (255) for
    ignore/padding, ``name`` str, and for datasets with depth ``depth`` float32 (1, H, W) plus
    ``depth_valid`` bool (1, H, W) (depth is 0 on padding and where the raw depth is 0, unknown).
    """

    #: Samples carry ``depth``/``depth_valid`` (``task_type=depth`` needs it).
    has_depth = False
    #: Samples carry class labels in ``mask`` (False: depth only, ``mask`` is all ``ignore_index``).
    has_labels = True
    #: The dataset's evaluation protocol (``eval.mode=auto``): whole images or sliding windows.
    eval_mode = "whole"

    def __init__(
        self,
        num_classes: int,
        crop_size: int,
        batch_size: int,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        scale_range: Sequence[float] = (0.5, 2.0),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = _positive(num_classes, "num_classes", 2)
        self.crop_size = _positive(crop_size, "crop_size")
        self.batch_size = _positive(batch_size, "batch_size")
        self.num_workers = _positive(num_workers, "num_workers", 0)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else _positive(eval_batch_size, "eval_batch_size")
        )
        self.scale_range = tuple(float(s) for s in scale_range)
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"data.scale_range must be [low, high] with 0 < low <= high, got {scale_range!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"data.mean and data.std must be 3 values (std > 0), got {mean!r}, {std!r}")
        self.seed = int(seed)
        self.ignore_index = int(ignore_index)
        if not self.num_classes <= self.ignore_index <= 255:
            raise ConfigError(
                f"data.ignore_index must lie in [num_classes, 255] (masks are uint8), got {ignore_index!r}"
            )
        if class_names is None:
            class_names = [f"class_{i}" for i in range(self.num_classes)]
        self.class_names = [str(c) for c in class_names]
        if len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"data.class_names has {len(self.class_names)} names but data.num_classes is {self.num_classes}"
            )
        self.palette = default_palette(self.num_classes)
        self.name = name or type(self).__name__
        self._sources: dict[str, SampleSource] | None = None
        #: train images kept out of training to choose among networks (:meth:`hold_out_train`)
        self.held_out: list[int] | None = None
        #: val images a search scored its candidates on, left out of the report (:meth:`reserve_val`)
        self.reserved_val: list[int] | None = None

    def build_source(self, split: str) -> SampleSource:
        """Return the un-transformed samples of ``split`` (``train`` or ``val``).

        Called once per split by :meth:`setup`. Check what is cheap here (folders, split files,
        that every listed file exists) and raise ``DatasetError`` naming the path.
        """
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Index both splits (idempotent; every stage needs train and val or their subsets)."""
        if self._sources is not None:
            return
        sources = {split: self.build_source(split) for split in SPLITS}
        for split, source in sources.items():
            if len(source) == 0:
                raise DatasetError(f"{self.name}: the {split} split has no samples")
        self._sources = sources

    def source(self, split: str) -> SampleSource:
        """The raw samples of ``split`` (for drawing and inspection)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        assert self._sources is not None
        return self._sources[split]

    def _train_transform(
        self, stream: int, crop_size: int | None = None, scale_range: Sequence[float] | None = None
    ) -> SegmentationTransform:
        low, high = self.scale_range if scale_range is None else scale_range
        return train_transform(
            crop_size or self.crop_size,
            (float(low), float(high)),
            self.mean,
            self.std,
            self.ignore_index,
            _seed_stream(self.seed, stream),
        )

    def _eval_transform(self) -> SegmentationTransform:
        return eval_transform(self.mean, self.std)

    def _permutation(self, split: str, stream: int) -> np.ndarray:
        return np.random.default_rng([self.seed, stream]).permutation(len(self.source(split)))

    def dataset(self, split: str) -> SegmentationDataset:
        """The split as training and reporting see it: train augmentation for ``train`` (less the
        :meth:`hold_out_train` images), eval transform for ``val`` (less :meth:`reserve_val`'s)."""
        if split == "train":
            return SegmentationDataset(
                self.source(split), self._train_transform(_AUG_TRAIN), self._without("train", self.held_out)
            )
        return SegmentationDataset(self.source(split), self._eval_transform(), self._without(split, self.reserved_val))

    def _without(self, split: str, left_out: Sequence[int] | None) -> list[int] | None:
        if not left_out:
            return None
        excluded = set(left_out)
        return [i for i in range(len(self.source(split))) if i not in excluded]

    def hold_out_train(self, fraction: float, key: str = "retrain.holdout") -> list[int]:
        """Keep a seeded ``fraction`` of train (at least one image) out of training, to choose
        among networks on it (:meth:`holdout_dataset`) so that val is left for the report."""
        total = len(self.source("train"))
        count = max(1, round(float(fraction) * total))
        if total - count < self.batch_size:
            raise ConfigError(
                f"{key}={fraction}: holding out {count} of {total} training images leaves fewer "
                f"than data.batch_size={self.batch_size} to train on"
            )
        self.held_out = sorted(int(i) for i in self._permutation("train", _PERM_SELECTION)[:count])
        return self.held_out

    def holdout_dataset(self) -> SegmentationDataset:
        """The held-out training images, whole, with the eval transform (scored as val is)."""
        if not self.held_out:
            raise ValueError("no training images are held out: call hold_out_train first")
        return self.eval_dataset("train", self.held_out)

    def reserve_val(self, indices: Sequence[int]) -> None:
        """Leave ``indices`` of val out of every later report: a search chose on them (FMAS scores
        its candidates on a val subset, the paper's protocol), so they cannot also measure the result."""
        reserved = sorted({int(i) for i in indices})
        if len(reserved) >= len(self.source("val")):
            raise ConfigError(
                f"the search scored its candidates on all {len(self.source('val'))} val images "
                "(searcher.val_images): none is left to report the result on; lower it"
            )
        self.reserved_val = reserved

    def train_crops(
        self, crop_size: int, scale_range: Sequence[float] | None = None, indices: Sequence[int] | None = None
    ) -> SegmentationDataset:
        """Train (or its ``indices``) with the train augmentation at ``crop_size`` crops and
        ``scale_range`` (default ``data.scale_range``): for a search whose stages train at their
        own crop sizes (auxcell, ``searcher.stage1.crop_size`` / ``stage2.crop_size``)."""
        return SegmentationDataset(
            self.source("train"), self._train_transform(_AUG_TRAIN, crop_size, scale_range), indices
        )

    def eval_dataset(self, split: str, indices: Sequence[int] | None = None) -> SegmentationDataset:
        """The whole split (or its ``indices``) with the eval transform, e.g. to score a network on
        a held-out part of train."""
        return SegmentationDataset(self.source(split), self._eval_transform(), indices)

    def _half_indices(self) -> tuple[list[int], list[int]]:
        """trainA's and trainB's images (a seeded permutation cut in two; an odd one out unused)."""
        perm = [int(i) for i in self._permutation("train", _PERM_HALVES)]
        half = len(perm) // 2
        return perm[:half], perm[half : 2 * half]

    def train_half_b_indices(self) -> list[int]:
        """The training images of :meth:`train_halves`' trainB, in its order."""
        return self._half_indices()[1]

    def train_halves(self) -> tuple[SegmentationDataset, SegmentationDataset]:
        """Two disjoint, equal halves of train (Auto-DeepLab's trainA for weights, trainB for
        architecture), both with the train augmentation. An odd sample out is left unused."""
        half_a, half_b = self._half_indices()
        source = self.source("train")
        return (
            SegmentationDataset(source, self._train_transform(_AUG_HALF_A), half_a),
            SegmentationDataset(source, self._train_transform(_AUG_HALF_B), half_b),
        )

    def val_subset(self, n: int) -> SegmentationDataset:
        """The first ``n`` (at most all) of a seeded permutation of val, eval transform: a fixed,
        cheap set for scoring candidates."""
        if n < 1:
            raise ValueError(f"val_subset: n={n}, expected at least one image")
        return SegmentationDataset(
            self.source("val"), self._eval_transform(), [int(i) for i in self._permutation("val", _PERM_VAL)[:n]]
        )

    def calib_subset(self, n: int) -> SegmentationDataset:
        """A seeded subset of ``n`` train images (at most all) as fixed, unpadded
        ``crop_size`` crops (see ``transforms.calibration_transform``), for recalibrating
        BatchNorm statistics of sub-networks before scoring."""
        if n < 1:
            raise ValueError(f"calib_subset: n={n}, expected at least one image")
        transform = calibration_transform(self.crop_size, self.mean, self.std, _seed_stream(self.seed, _AUG_CALIB))
        return SegmentationDataset(self.source("train"), transform, self._permutation("train", _PERM_CALIB)[:n])

    def train_subsets(self, *counts: int) -> list[SegmentationDataset]:
        """Disjoint subsets of train, whole images with the eval transform: the first ``counts[0]``
        of a seeded permutation, then the next ``counts[1]``, ... (int8 quantization calibrates on
        the first and judges what to keep in float on the second). Refuses counts that train cannot
        fill, naming how many images it has."""
        total = len(self.source("train"))
        if sum(counts) > total or min(counts, default=1) < 1:
            raise ConfigError(
                f"{self.name}: asked for {' + '.join(map(str, counts))} distinct training images, train has {total}"
            )
        order = [int(i) for i in self._permutation("train", _PERM_QUANTIZE)]
        starts = [sum(counts[:k]) for k in range(len(counts))]
        return [self.eval_dataset("train", order[start : start + n]) for start, n in zip(starts, counts)]

    def centre_crops(self, split: str, size: int, indices: Sequence[int] | None = None) -> SegmentationDataset:
        """``split`` (or its ``indices``) resized and centre-cropped to ``size`` squares: the
        auxiliary-cell search's held-out reward transform (``transforms.centre_crop_transform``)."""
        return SegmentationDataset(self.source(split), centre_crop_transform(size, self.mean, self.std), indices)

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """A DataLoader with the module's batching rules.

        Training loaders shuffle with a generator seeded by ``seed`` and drop the last partial
        batch, because BatchNorm after image pooling fails on a batch of one. Build a loader
        once and iterate it every epoch: a new loader restarts the same seeded order. Evaluation
        loaders batch whole images of any sizes (:func:`pad_collate`).
        """
        if train and len(dataset) < self.batch_size:
            raise DatasetError(
                f"{self.name}: the training set has {len(dataset)} samples, fewer than "
                f"data.batch_size={self.batch_size}; with drop_last no batch would remain. "
                "Lower data.batch_size or add samples."
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_init_worker,
            collate_fn=None if train else partial(pad_collate, ignore_index=self.ignore_index),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        """The val split: the public test sets of these benchmarks have no labels."""
        return self.loader(self.dataset("val"), train=False)
