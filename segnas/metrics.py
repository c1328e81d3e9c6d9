"""Segmentation and depth metrics.

All segmentation scores come from one confusion matrix per split, accumulated by torchmetrics so
that DDP ranks sum their matrices before anything is divided. Classes absent from both the
ground truth and the predictions of a split are left out of the means (NaN-mean), as in the
PASCAL VOC and Cityscapes evaluation code; pixels labelled ``ignore_index`` count nowhere.

Depth scores (RMSE, REL, δ1) are likewise sums over every valid pixel of a split, divided once
at the end: a split's RMSE is over its pixels, not a mean of per-image RMSEs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix


def scores_from_confusion(confusion: torch.Tensor, omit: Sequence[int] = ()) -> dict[str, float]:
    """mIoU, frequency-weighted IoU, pixel accuracy and mean class accuracy.

    ``confusion[i, j]`` counts pixels of true class ``i`` predicted as ``j``. Classes in ``omit``
    are left out of the three class means (frequencies are then among the kept classes) but not
    out of the matrix: a pixel of an omitted class predicted as class ``k`` still counts against
    ``k``'s IoU, as the auxiliary-cell authors omit background from their reward
    (nas-segm-pytorch ``src/engine/inference.py``: ``present_ind = np.setdiff1d(present_ind,
    omit_classes)`` after every IoU is computed from the whole matrix). Pixel accuracy counts
    every pixel.
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    ground_truth = confusion.sum(1)
    predicted = confusion.sum(0)
    union = ground_truth + predicted - true_positive
    total = confusion.sum()
    kept = torch.ones_like(union, dtype=torch.bool)
    kept[list(omit)] = False
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where((union > 0) & kept, true_positive / union.clamp(min=1), nan)
    class_accuracy = torch.where((ground_truth > 0) & kept, true_positive / ground_truth.clamp(min=1), nan)
    frequency = ground_truth * kept / (ground_truth * kept).sum().clamp(min=1)
    return {
        "mIoU": float(iou.nanmean()) if iou.isfinite().any() else 0.0,
        "fwIoU": float((frequency * iou.nan_to_num(0.0)).sum()),
        "pixel_acc": float(true_positive.sum() / total.clamp(min=1)),
        "mean_class_acc": float(class_accuracy.nanmean()) if class_accuracy.isfinite().any() else 0.0,
    }


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    return torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """Each pixel's class (N, H, W) from logits (N, C, H, W): ``torch.argmax`` over the classes.

    Computed as ``max(1).indices``, the same values (the first of tied maxima; a NaN wins) at a
    fraction of the time: torch's CPU ``argmax`` over a dimension that is not the innermost runs a
    slow path (pytorch/pytorch#140000, open; the measurements: BENCHMARKS.md, "Class predictions").
    """
    return logits.max(1).indices


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
            preds = predicted_classes(preds)
        super().update(preds.flatten(), target.flatten())


class DepthMetrics(Metric):
    """RMSE, REL (mean |d - d*| / d*) and δ1 (fraction with max(d / d*, d* / d) < 1.25) over the
    valid pixels of a split, DDP-correct (ranks sum their pixel sums before dividing).

    ``update`` takes predictions and targets in metres of the same shape, e.g. (N, 1, H, W), and
    ``valid`` (bool, same shape); without ``valid`` the pixels with target > 0 count (the
    transforms put 0 wherever depth is unknown). Predictions are clamped to ``min_depth`` first,
    as depth benchmarks clamp, so a negative output cannot make δ1 or REL meaningless.
    ``compute`` returns ``{"RMSE", "REL", "delta1"}`` (NaN when no pixel was valid).
    """

    full_state_update = False

    def __init__(self, min_depth: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_depth = float(min_depth)
        for name in ("squared_error", "relative_error", "within", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:  # type: ignore[override]
        if preds.shape != target.shape:
            raise ValueError(
                f"depth predictions {tuple(preds.shape)} and targets {tuple(target.shape)} differ in shape"
            )
        valid = target > 0 if valid is None else valid.bool() & (target > 0)
        pred = preds.detach()[valid].double().clamp(min=self.min_depth)
        true = target[valid].double()
        self.squared_error += ((pred - true) ** 2).sum()
        self.relative_error += ((pred - true).abs() / true).sum()
        self.within += (torch.maximum(pred / true, true / pred) < 1.25).sum()
        self.count += float(true.numel())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"RMSE": float("nan"), "REL": float("nan"), "delta1": float("nan")}
        return {
            "RMSE": float(torch.sqrt(self.squared_error / self.count)),
            "REL": float(self.relative_error / self.count),
            "delta1": float(self.within / self.count),
        }


#: The Fast Dense NAS reward: what the authors' code multiplies (mIoU, mean class accuracy, fwIoU).
REWARD_METRICS = ("mIoU", "fwIoU", "mean_class_acc")
#: The depth reward: δ1 and RMSE (entering as 1 / (1 + RMSE), see ``geometric_reward``).
DEPTH_REWARD_METRICS = ("delta1", "RMSE")
#: Errors (lower is better): ``geometric_reward`` turns each into 1 / (1 + error).
LOWER_IS_BETTER = ("RMSE", "REL")


def geometric_reward(scores: dict[str, float], metrics: tuple[str, ...] | list[str] = REWARD_METRICS) -> float:
    """Geometric mean of ``metrics`` taken from ``scores`` (e.g. ``scores_from_confusion``).

    A geometric mean rewards a network only when every score is up: one collapsed score (say
    mIoU of an all-background prediction) pulls the reward towards zero. An error in
    :data:`LOWER_IS_BETTER` enters as 1 / (1 + error): in (0, 1], 1 for a perfect prediction,
    falling monotonically as the error grows, so it multiplies with fractions such as δ1.
    """
    unknown = [name for name in metrics if name not in scores]
    if unknown or not metrics:
        raise KeyError(f"reward metrics {unknown or '[]'} not among {sorted(scores)}")
    product = 1.0
    for name in metrics:
        value = float(scores[name])
        if name in LOWER_IS_BETTER:
            value = 1.0 / (1.0 + max(value, 0.0))
        product *= max(value, 0.0)
    return product ** (1.0 / len(metrics))
