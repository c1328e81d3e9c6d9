"""Train and eval transforms shared by every dataset (albumentations 2.0.8).

A transform turns a *raw sample* (``image`` uint8 HxWx3, ``mask`` uint8 HxW of class ids with
``ignore_index`` for ignore, optional ``depth`` float32 HxW, ``name``) into the tensors the
models eat (see :class:`SegmentationTransform`).

The traps this module keeps in one place:

* albumentations 2.x ignores ``PadIfNeeded(mask_value=...)``; the mask fill is ``fill_mask``.
  Padded mask pixels must be ``ignore_index`` or the loss learns the padding as background.
* OpenCV's thread pool is not fork-safe: a forked DataLoader worker that touches it (even
  ``cv2.setNumThreads``) can deadlock on state copied from the parent, and its threads would
  oversubscribe the cores the workers already share. Importing this module therefore switches
  OpenCV to sequential mode (``cv2.setNumThreads(0)``) in the parent, before any worker forks.
* ``Compose`` keeps its own random state. A DataLoader worker forked from the main process
  inherits a *copy* of it, so without re-seeding every worker (and every epoch, when workers are
  not persistent) replays the same augmentations. :meth:`SegmentationTransform.reseed` is
  called from the DataLoader's ``worker_init_fn``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network at import time

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

cv2.setNumThreads(0)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RawSample = dict[str, Any]
Sample = dict[str, Any]

# Depth and a validity plane travel as extra masks: nearest interpolation, same geometry.
_EXTRA_TARGETS = {"depth": "mask", "valid": "mask"}


class SegmentationTransform:
    """Apply an albumentations pipeline to a raw sample and convert it to tensors.

    Output keys: ``image`` float32 (3, H, W) normalised with ``mean``/``std``; ``mask`` int64
    (H, W); ``name`` str; and, when the raw sample has depth, ``depth`` float32 (1, H, W) and
    ``depth_valid`` bool (1, H, W). Depth is 0 where ``depth_valid`` is False (padding, and raw
    depth 0 = no measurement), so a depth loss must be masked with ``depth_valid``; NaN padding
    was rejected because one stray NaN poisons a whole batch's loss. Random scaling by s divides
    depth by s (see ``_zoom``).
    """

    def __init__(self, pipelines: Sequence[A.Compose], select_large: int | None = None) -> None:
        """``pipelines`` holds one pipeline, or two when ``select_large`` is set: the second is
        used for images whose longest side exceeds ``select_large`` pixels."""
        self.pipelines = list(pipelines)
        self.select_large = select_large

    def reseed(self, seed: int) -> None:
        """Give the random augmentations a fresh, reproducible state (one per worker)."""
        for pipeline in self.pipelines:
            pipeline.set_random_seed(seed % 2**32)

    def __call__(self, raw: RawSample) -> Sample:
        image, mask = raw["image"], raw["mask"]
        pipeline = self.pipelines[0]
        if self.select_large is not None and max(image.shape[:2]) > self.select_large:
            pipeline = self.pipelines[1]
        targets = {"image": image, "mask": mask}
        has_depth = raw.get("depth") is not None
        if has_depth:
            targets["depth"] = raw["depth"].astype(np.float32, copy=False)
            targets["valid"] = (targets["depth"] > 0).astype(np.uint8)  # raw 0: no measurement
        out = pipeline(**targets)
        sample: Sample = {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(out["mask"])).long(),
            "name": raw["name"],
        }
        if has_depth:
            valid = out["valid"] == 1
            depth = np.where(valid, out["depth"] / _zoom(out), 0.0).astype(np.float32)
            sample["depth"] = torch.from_numpy(depth)[None]
            sample["depth_valid"] = torch.from_numpy(valid)[None]
        return sample


def _zoom(out: dict[str, Any]) -> float:
    """The factor ``RandomScale`` enlarged the image by (1 when it did not run).

    Depth is divided by it: an image enlarged s times looks like the scene seen from s times
    closer (Eigen et al., NIPS 2014), so the depth cues the network reads stay consistent.
    """
    for name, params in out.get("applied_transforms", ()):
        if name == "RandomScale":
            return float(params["scale"])
    return 1.0


def _pad(size: int, ignore_index: int, position: str) -> A.PadIfNeeded:
    return A.PadIfNeeded(
        min_height=size,
        min_width=size,
        position=position,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=ignore_index,
    )


def train_transform(
    crop_size: int,
    scale_range: tuple[float, float],
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int,
    seed: int,
) -> SegmentationTransform:
    """Random scale in ``scale_range``, pad to the crop (image 0, mask ``ignore_index``),
    random ``crop_size`` square crop, horizontal flip, normalise."""
    low, high = scale_range
    pipeline = A.Compose(
        [
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0),
            _pad(crop_size, ignore_index, "center"),
            A.RandomCrop(crop_size, crop_size),
            A.HorizontalFlip(p=0.5),
            A.Normalize(mean=tuple(mean), std=tuple(std)),
        ],
        additional_targets=_EXTRA_TARGETS,
        seed=seed % 2**32,
        save_applied_params=True,  # the drawn scale, for the depth targets (see _zoom)
    )
    return SegmentationTransform([pipeline])


def eval_transform(
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int,
) -> SegmentationTransform:
    """Fit the whole image into a ``crop_size`` square without cropping, so batches stack.

    An image that already fits is only padded (bottom/right, mask ``ignore_index``), so it is
    scored at its native resolution with no interpolation of the labels. A larger one is first
    shrunk so its longest side equals ``crop_size`` (labels by nearest neighbour), which means
    scores on e.g. Cityscapes at crop 769 are at reduced resolution, not the official full-size
    protocol. The prediction for the real pixels is ``pred[:h, :w]`` of the padded output.
    """

    def tail() -> list[A.BasicTransform]:
        return [_pad(crop_size, ignore_index, "top_left"), A.Normalize(mean=tuple(mean), std=tuple(std))]

    fits = A.Compose(tail(), additional_targets=_EXTRA_TARGETS)
    shrink = A.Compose(
        [A.LongestMaxSize(max_size=crop_size), *tail()], additional_targets=_EXTRA_TARGETS
    )
    return SegmentationTransform([fits, shrink], select_large=crop_size)
