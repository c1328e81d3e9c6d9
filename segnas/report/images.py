"""Validation predictions drawn over their images, for W&B and as PNG files in the run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib import colormaps
from PIL import Image

from segnas.report.loggers import is_wandb

IGNORE_COLOUR = np.array([255, 255, 255], dtype=np.uint8)


def colourise(mask: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    safe = np.where(mask == ignore_index, 0, mask).clip(0, len(palette) - 1)
    rgb = palette[safe]
    rgb[mask == ignore_index] = IGNORE_COLOUR
    return rgb


def overlay_panel(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    palette: np.ndarray,
    ignore_index: int = 255,
    alpha: float = 0.55,
) -> np.ndarray:
    """Image | ground truth over image | prediction over image, side by side (uint8 HxWx3)."""

    def blend(mask: np.ndarray) -> np.ndarray:
        colour = colourise(mask, palette, ignore_index).astype(np.float32)
        return (alpha * colour + (1 - alpha) * image.astype(np.float32)).astype(np.uint8)

    return np.concatenate([image, blend(target), blend(prediction)], axis=1)


def depth_panel(image: np.ndarray, target: np.ndarray, prediction: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Image | true depth | predicted depth (uint8 HxWx3), both depths on one colour scale set
    by the true depth's valid range (near = bright), unknown true depth white."""
    known = target[valid]
    low, high = (float(known.min()), float(known.max())) if known.size else (0.0, 1.0)

    def colour(depth: np.ndarray) -> np.ndarray:
        scaled = 1.0 - np.clip((depth - low) / max(high - low, 1e-6), 0.0, 1.0)
        return (colormaps["magma"](scaled)[..., :3] * 255).astype(np.uint8)

    truth = colour(target)
    truth[~valid] = IGNORE_COLOUR
    return np.concatenate([image, truth, colour(prediction)], axis=1)


def denormalise(images: torch.Tensor, mean: Any, std: Any) -> np.ndarray:
    """(N,3,H,W) normalised tensors back to uint8 (N,H,W,3)."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    pixels = ((images * std_t + mean_t) * 255.0).clamp(0, 255).byte()
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


class ValidationImages(pl.Callback):
    """Draws the first ``num_images`` images of the first validation batch every epoch, each at
    its own size, from the per-image ``predictions`` the validation step returns.

    ``datamodule`` supplies the normalisation to undo and the palette; it is given here rather
    than read from the trainer because ``task=eval`` validates on a bare dataloader.
    """

    def __init__(self, run_dir: Path, datamodule: Any, num_images: int = 4) -> None:
        self.directory = Path(run_dir) / "images"
        self.datamodule = datamodule
        self.num_images = num_images

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or self.num_images <= 0 or not trainer.is_global_zero or trainer.sanity_checking:
            return
        datamodule = self.datamodule
        count = min(self.num_images, batch["image"].shape[0])
        sizes = batch["size"].tolist() if "size" in batch else [batch["image"].shape[-2:]] * count
        images = [
            denormalise(batch["image"][i : i + 1, :, :h, :w], datamodule.mean, datamodule.std)[0]
            for i, (h, w) in zip(range(count), sizes)
        ]
        predictions = [p.float().cpu().numpy() for p in outputs["predictions"][:count]]
        if predictions[0].ndim == 3:  # task_type=depth: (1, H, W) per image
            truth, valid = (
                [batch[key][i, 0, :h, :w].cpu().numpy() for i, (h, w) in zip(range(count), sizes)]
                for key in ("depth", "depth_valid")
            )
            panels = [depth_panel(*parts) for parts in zip(images, truth, [p[0] for p in predictions], valid)]
        else:
            targets = [batch["mask"][i, :h, :w].cpu().numpy() for i, (h, w) in zip(range(count), sizes)]
            panels = [
                overlay_panel(image, target, prediction.astype(np.int64), datamodule.palette, datamodule.ignore_index)
                for image, target, prediction in zip(images, targets, predictions)
            ]
        width = max(panel.shape[1] for panel in panels)  # images of different sizes: pad the rows white
        panels = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
        self.directory.mkdir(parents=True, exist_ok=True)
        grid = np.concatenate(panels, axis=0)
        Image.fromarray(grid).save(self.directory / f"val_epoch{trainer.current_epoch:03d}.png")
        if is_wandb(trainer.logger):
            trainer.logger.log_image(
                key="val/predictions",
                images=list(panels),
                caption=["image | ground truth | prediction"] * len(panels),
                step=trainer.global_step,
            )
