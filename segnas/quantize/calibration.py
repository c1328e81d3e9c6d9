"""The calibration reader: the images activation ranges are collected on.

Images arrive as the run's evaluation transform makes them (normalised, whole) and are resized
to the deployment size the network was exported at, as the device will see them; the reader
can be rewound, because one quantization may calibrate several times (a sensitivity report, the
automatic mode).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segnas.quantize.static import QuantizeError


def deployment_input(image: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """A (3, H, W) or (N, 3, H, W) float image resized (bilinear) to ``input_size``: what the
    exported network takes."""
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    if tuple(batch.shape[-2:]) == tuple(input_size):
        return batch.float()
    return F.interpolate(batch.float(), size=tuple(input_size), mode="bilinear", align_corners=False)


class ImageCalibration:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``images`` (each (3, H, W),
    already through the evaluation transform), fed one at a time as ``{input_name: (1, 3, h, w)}``
    at ``input_size``. Refuses an empty set before any work starts."""

    def __init__(self, images: Iterable[torch.Tensor], input_size: tuple[int, int], input_name: str = "image") -> None:
        self.feeds = [{input_name: deployment_input(image, input_size).numpy().astype(np.float32)} for image in images]
        if not self.feeds:
            raise QuantizeError("quantize.calib_images: the calibration set is empty")
        self.rewind()

    def __len__(self) -> int:
        return len(self.feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter: Iterator[dict[str, Any]] = iter(self.feeds)


def dataset_images(dataset: Any) -> list[torch.Tensor]:
    """The ``image`` tensors of a segnas dataset, in order."""
    return [dataset[i]["image"] for i in range(len(dataset))]
