"""How a network is scored: the datasets' evaluation protocol.

VOC, Cityscapes, ADE20K and the folder format are scored the same way: the network predicts on
the *whole* image at its full resolution (optionally resized by ``scale`` for the network, the
logits resized back), and the prediction is compared with the *original* mask, never a resampled
one. Large images may instead be predicted by *sliding windows* (``mode="slide"``): windows of
``window`` pixels every ``stride`` pixels cover the image, their logits are summed where they
overlap and divided by the number of windows covering each pixel (mmsegmentation's
``slide_inference``; the usual choice for Cityscapes' 1024×2048 at crop 769, stride 513). A
window never reaches outside the image: an image smaller than the window is one window, itself.

Batches of images of different sizes arrive padded to the largest (see
:func:`segnas.data.datamodule.pad_collate`) with each image's true size in ``batch["size"]``;
:func:`size_groups` hands out the images of each size cropped back to it, so the padding never
reaches the network and a score does not depend on how images were batched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from segnas.metrics import predicted_classes

MODES = ("whole", "slide")
#: ``eval.mode=auto``: the dataset's own protocol (its datamodule's ``eval_mode``).
AUTO = "auto"


@dataclass(frozen=True)
class EvalProtocol:
    """``mode`` whole | slide; ``window`` and ``stride`` (height, width) for slide; ``scale``:
    the factor images are resized by before the network sees them (1: full resolution)."""

    mode: str = "whole"
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"eval mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.mode == "slide" and (self.window is None or self.stride is None):
            raise ValueError("sliding-window evaluation needs a window and a stride")
        for name in ("window", "stride"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise ValueError(f"eval {name} {value}: expected two positive integers")
        if not self.scale > 0:
            raise ValueError(f"eval scale {self.scale}: expected a positive number")

    def describe(self) -> str:
        """One line for logs and summaries: what exactly is scored."""
        what = (
            "whole images"
            if self.mode == "whole"
            else (f"sliding windows {self.window[0]}x{self.window[1]}, stride {self.stride[0]}x{self.stride[1]}")
        )
        scale = "" if self.scale == 1 else f", images resized x{self.scale:g} for the network (logits resized back)"
        return f"{what} at full resolution against the original masks{scale}"

    def predict(self, net: Callable[[torch.Tensor], Any], images: torch.Tensor) -> torch.Tensor:
        """Outputs (N, C, H, W) of ``net`` for same-size ``images`` (N, 3, H, W), at their size.

        ``net`` may return a tuple (a search network's auxiliary outputs): its first element is
        the prediction.
        """
        size = images.shape[-2:]
        if self.scale != 1:
            scaled = (max(1, round(size[0] * self.scale)), max(1, round(size[1] * self.scale)))
            images = F.interpolate(images, size=scaled, mode="bilinear", align_corners=False)
        outputs = _slide(net, images, self.window, self.stride) if self.mode == "slide" else _forward(net, images)
        return _resized(outputs, size)

    def outputs(
        self, net: Callable[[torch.Tensor], Any], batch: dict[str, Any]
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """(outputs, targets) for each image size of an evaluation batch (:func:`size_groups`):
        what every scorer feeds its metrics."""
        for images, targets in size_groups(batch):
            yield self.predict(net, images), targets


def _forward(net: Callable[[torch.Tensor], Any], images: torch.Tensor) -> torch.Tensor:
    output = net(images)
    output = output[0] if isinstance(output, tuple | list) else output
    return _resized(output, images.shape[-2:])


def _resized(outputs: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    if tuple(outputs.shape[-2:]) == tuple(size):
        return outputs
    return F.interpolate(outputs, size=tuple(size), mode="bilinear", align_corners=False)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of the windows along one side: every ``stride`` pixels, the last flush with the
    end, so each pixel is covered and no window leaves the image (one window when it is shorter)."""
    if length <= window:
        return [0]
    count = (length - window + stride - 1) // stride + 1
    return sorted({min(k * stride, length - window) for k in range(count)})


def _slide(
    net: Callable[[torch.Tensor], Any], images: torch.Tensor, window: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Window logits summed where windows overlap, divided by each pixel's window count. The
    windows of all images at one offset go through the network as one batch."""
    height, width = images.shape[-2:]
    win_h, win_w = min(window[0], height), min(window[1], width)
    total: torch.Tensor | None = None
    count = images.new_zeros(1, 1, height, width)
    for top in window_starts(height, win_h, stride[0]):
        for left in window_starts(width, win_w, stride[1]):
            out = _forward(net, images[:, :, top : top + win_h, left : left + win_w]).float()
            if total is None:
                total = images.new_zeros(images.shape[0], out.shape[1], height, width, dtype=torch.float32)
            total[:, :, top : top + win_h, left : left + win_w] += out
            count[:, :, top : top + win_h, left : left + win_w] += 1
    assert total is not None
    return total / count


def score_segmentation(
    protocol: EvalProtocol,
    net: Callable[[torch.Tensor], Any],
    batch: dict[str, Any],
    metrics: Any,
    ignore_index: int = 255,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Update ``metrics`` (a confusion-matrix metric) with every image of an evaluation batch
    predicted by ``protocol``; returns the mean cross-entropy over the batch's labelled pixels
    and each image's predicted classes (H, W) at its own size, in batch order."""
    predictions: list[torch.Tensor] = [torch.empty(0)] * batch["image"].shape[0]
    loss = torch.zeros((), device=batch["image"].device)
    pixels = 0
    for logits, targets in protocol.outputs(net, batch):
        classes = predicted_classes(logits)
        metrics.update(classes, targets["mask"])
        loss = loss + F.cross_entropy(logits.float(), targets["mask"], ignore_index=ignore_index, reduction="sum")
        pixels += int((targets["mask"] != ignore_index).sum())
        for index, predicted in zip(targets["index"].tolist(), classes):
            predictions[index] = predicted
    return loss / max(pixels, 1), predictions


def size_groups(batch: dict[str, Any]) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(images, targets) for each distinct image size of an evaluation batch, in batch order of
    first appearance, each cropped to its true size. ``targets`` holds every per-pixel key of
    the batch (``mask``, ``depth``, ``depth_valid``) and ``index``, the images' batch positions.
    A batch without ``size`` (all images one size) is one group."""
    images = batch["image"]
    keys = [k for k in ("mask", "depth", "depth_valid") if k in batch]
    sizes = batch.get("size")
    if sizes is None:
        yield images, {**{k: batch[k] for k in keys}, "index": torch.arange(images.shape[0])}
        return
    sizes = [tuple(int(v) for v in s) for s in sizes.tolist()]
    for size in dict.fromkeys(sizes):
        index = torch.tensor([i for i, s in enumerate(sizes) if s == size])
        h, w = size
        pick = index.to(images.device)
        yield images[pick, :, :h, :w], {**{k: batch[k][pick][..., :h, :w] for k in keys}, "index": index}


def eval_protocol(cfg: Any) -> EvalProtocol:
    """The protocol ``cfg.eval`` asks for: ``mode`` (auto: the dataset's own, its datamodule
    class's ``eval_mode``), ``window`` (null: ``data.crop_size``; an int or [h, w]), ``stride``
    (null: two thirds of the window) and ``scale``. The one place the config is read."""
    from segnas.errors import ConfigError

    settings = cfg.get("eval") or {}
    mode = str(settings.get("mode", AUTO))
    if mode not in (*MODES, AUTO):
        raise ConfigError(f"eval.mode={mode}: expected auto, {' or '.join(MODES)}")
    if mode == AUTO:
        mode = _dataset_mode(cfg)
    scale = settings.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ConfigError(f"eval.scale={scale}: expected a positive number (1: full resolution)")
    window = _pair(settings.get("window"), "eval.window") or (int(cfg.data.crop_size),) * 2
    stride = _pair(settings.get("stride"), "eval.stride") or tuple(max(1, round(2 * w / 3)) for w in window)
    if mode == "whole":
        return EvalProtocol("whole", scale=float(scale))
    return EvalProtocol("slide", window, stride, float(scale))


def _dataset_mode(cfg: Any) -> str:
    target = cfg.data.get("_target_") if cfg.get("data") is not None else None
    if not target:
        return "whole"
    from hydra.utils import get_class

    return str(getattr(get_class(str(target)), "eval_mode", "whole"))


def _pair(value: Any, key: str) -> tuple[int, int] | None:
    from segnas.errors import ConfigError

    if value is None:
        return None
    values = [value, value] if isinstance(value, int) else list(value)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ConfigError(f"{key}={value}: expected null, a positive integer or [height, width]")
    return values[0], values[1]
