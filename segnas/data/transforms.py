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
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network at import time

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from segnas.errors import ConfigError  # noqa: E402

cv2.setNumThreads(0)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RawSample = dict[str, Any]
Sample = dict[str, Any]

# Depth and a validity plane travel as extra masks: nearest interpolation, same geometry.
_EXTRA_TARGETS = {"depth": "mask", "valid": "mask"}


def checked_image_scale(value: Any) -> float:
    """``data.image_scale`` checked: a number in (0, 4]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 4:
        raise ConfigError(f"data.image_scale must be a number in (0, 4], got {value!r}")
    return float(value)


def resize_sample(sample: RawSample, scale: float) -> RawSample:
    """A raw sample read at another resolution (``data.image_scale``): the image area-averaged
    (for a factor of 0.5 this is the 2×2 mean, what bilinear resizing gives too), the mask and
    depth by nearest neighbour, so no label or depth value is invented. Sizes round to the
    nearest pixel (at least 1)."""
    height, width = sample["image"].shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    out = dict(sample)
    out["image"] = cv2.resize(sample["image"], size, interpolation=cv2.INTER_AREA)
    for key in ("mask", "depth"):
        if key in sample:
            out[key] = cv2.resize(sample[key], size, interpolation=cv2.INTER_NEAREST)
    return out


class SegmentationTransform:
    """Apply an albumentations pipeline to a raw sample and convert it to tensors.

    Output keys: ``image`` float32 (3, H, W) normalised with ``mean``/``std``; ``mask`` int64
    (H, W); ``name`` str; and, when the raw sample has depth, ``depth`` float32 (1, H, W) and
    ``depth_valid`` bool (1, H, W). Depth is 0 where ``depth_valid`` is False (padding, and raw
    depth 0 = no measurement), so a depth loss must be masked with ``depth_valid``; NaN padding
    was rejected because one stray NaN poisons a whole batch's loss. Random scaling by s divides
    depth by s (see ``_zoom``).
    """

    def __init__(self, pipelines: Sequence[A.Compose], select: Callable[[int, int], int] | None = None) -> None:
        """``pipelines`` holds one pipeline, or several and ``select``, which picks the index of
        the one to use from an image's height and width."""
        self.pipelines = list(pipelines)
        self.select = select

    def reseed(self, seed: int) -> None:
        """Give the random augmentations a fresh, reproducible state (one per worker)."""
        for pipeline in self.pipelines:
            pipeline.set_random_seed(seed % 2**32)

    def __call__(self, raw: RawSample) -> Sample:
        image, mask = raw["image"], raw["mask"]
        pipeline = self.pipelines[0 if self.select is None else self.select(*image.shape[:2])]
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


def _pad(size: int, ignore_index: int) -> A.PadIfNeeded:
    """Pad bottom and right to ``size``: the image stays anchored at the top-left corner, as
    DeepLab's and mmsegmentation's training pipelines pad. The image is already normalised, so
    the fill 0 is the mean colour, which is also what a convolution's zero padding sees at an
    image border: a network evaluated on whole, unpadded images meets the same surroundings it
    was trained with. Mask padding is ``ignore_index`` (albumentations 2.x: ``fill_mask``)."""
    return A.PadIfNeeded(
        min_height=size,
        min_width=size,
        position="top_left",
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=ignore_index,
    )


def _normalise(mean: Sequence[float], std: Sequence[float]) -> A.Normalize:
    return A.Normalize(mean=tuple(mean), std=tuple(std))


def train_transform(
    crop_size: int,
    scale_range: tuple[float, float],
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int,
    seed: int,
) -> SegmentationTransform:
    """Random scale in ``scale_range``, normalise, pad bottom/right to the crop (mean colour,
    mask ``ignore_index``; see :func:`_pad`), random ``crop_size`` square crop, horizontal flip."""
    low, high = scale_range
    pipeline = A.Compose(
        [
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0),
            _normalise(mean, std),
            _pad(crop_size, ignore_index),
            A.RandomCrop(crop_size, crop_size),
            A.HorizontalFlip(p=0.5),
        ],
        additional_targets=_EXTRA_TARGETS,
        seed=seed % 2**32,
        save_applied_params=True,  # the drawn scale, for the depth targets (see _zoom)
    )
    return SegmentationTransform([pipeline])


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> SegmentationTransform:
    """The whole image at its own resolution, normalised; the mask untouched.

    Evaluation scores the full-resolution prediction against the original mask (see
    :mod:`segnas.evaluation`); images of different sizes are batched by padding them in the
    loader's collate and cropped back before the network sees them.
    """
    return SegmentationTransform([A.Compose([_normalise(mean, std)], additional_targets=_EXTRA_TARGETS)])


def calibration_transform(
    crop_size: int, mean: Sequence[float], std: Sequence[float], seed: int
) -> SegmentationTransform:
    """A ``crop_size`` square cut from inside the image, never padded: for recalibrating
    BatchNorm statistics, which padding would bias (about a quarter of the pixels of a VOC image
    padded to 512). An image whose shorter side is below the crop is first enlarged to it
    (aspect kept); only image statistics are read, so the resampled labels are never scored."""

    def pipeline(*steps: A.BasicTransform) -> A.Compose:
        return A.Compose(
            [*steps, A.RandomCrop(crop_size, crop_size), _normalise(mean, std)],
            additional_targets=_EXTRA_TARGETS,
            seed=seed % 2**32,
        )

    fits = pipeline()
    small = pipeline(
        A.SmallestMaxSize(max_size=crop_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
    )
    return SegmentationTransform([fits, small], select=lambda h, w: int(min(h, w) < crop_size))


def centre_crop_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> SegmentationTransform:
    """Shorter side resized to ``size``, then the central ``size`` square (labels nearest): the
    auxiliary-cell authors' held-out transform (nas-segm-pytorch ``src/data/loaders.py``,
    ``ResizeShorterScale(val_shorter_side) -> CentralCrop(val_crop_size)``). A search signal, not a
    reported score: it resamples labels, which the evaluation protocol never does."""
    return SegmentationTransform(
        [
            A.Compose(
                [
                    A.SmallestMaxSize(
                        max_size=size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
                    ),
                    A.CenterCrop(size, size),
                    _normalise(mean, std),
                ],
                additional_targets=_EXTRA_TARGETS,
            )
        ]
    )
