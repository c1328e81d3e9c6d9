"""Segmentation metrics.

All segmentation scores come from one confusion matrix per split, accumulated by torchmetrics so
that DDP ranks sum their matrices before anything is divided. Classes absent from both the
ground truth and the predictions of a split are left out of the means (NaN-mean), as in the
PASCAL VOC and Cityscapes evaluation code; pixels labelled ``ignore_index`` count nowhere.
"""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU, frequency-weighted IoU, pixel accuracy and mean class accuracy.

    ``confusion[i, j]`` counts pixels of true class ``i`` predicted as ``j``.
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    ground_truth = confusion.sum(1)
    predicted = confusion.sum(0)
    union = ground_truth + predicted - true_positive
    total = confusion.sum()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
    class_accuracy = torch.where(ground_truth > 0, true_positive / ground_truth.clamp(min=1), nan)
    frequency = ground_truth / total.clamp(min=1)
    return {
        "mIoU": float(iou.nanmean()) if union.gt(0).any() else 0.0,
        "fwIoU": float((frequency * iou.nan_to_num(0.0)).sum()),
        "pixel_acc": float(true_positive.sum() / total.clamp(min=1)),
        "mean_class_acc": float(class_accuracy.nanmean()) if ground_truth.gt(0).any() else 0.0,
    }


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    return torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))


class SegmentationMetrics(MulticlassConfusionMatrix):
    """A DDP-correct confusion matrix over a whole split.

    ``update`` takes logits (N, C, H, W) or class ids (N, H, W) and targets (N, H, W);
    ``compute`` returns the matrix summed over ranks, which ``scores_from_confusion`` and
    ``per_class_iou`` turn into numbers.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False, **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(1)
        super().update(preds.flatten(), target.flatten())


#: The Fast Dense NAS reward: what the authors' code multiplies (mIoU, mean class accuracy, fwIoU).
REWARD_METRICS = ("mIoU", "fwIoU", "mean_class_acc")


def geometric_reward(scores: dict[str, float], metrics: tuple[str, ...] | list[str] = REWARD_METRICS) -> float:
    """Geometric mean of ``metrics`` taken from ``scores`` (e.g. ``scores_from_confusion``).

    A geometric mean rewards a network only when every score is up: one collapsed score (say
    mIoU of an all-background prediction) pulls the reward towards zero.
    """
    unknown = [name for name in metrics if name not in scores]
    if unknown or not metrics:
        raise KeyError(f"reward metrics {unknown or '[]'} not among {sorted(scores)}")
    product = 1.0
    for name in metrics:
        product *= max(float(scores[name]), 0.0)
    return product ** (1.0 / len(metrics))
