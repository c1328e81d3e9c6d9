"""Metrics against an independent NumPy reference built from per-pixel loops over the classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segnas.metrics import SegmentationMetrics, per_class_iou, scores_from_confusion


def numpy_reference(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = 255):
    keep = target != ignore
    pred, target = pred[keep], target[keep]
    ious, accs, freqs = [], [], []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (target == c))
        gt = np.sum(target == c)
        pr = np.sum(pred == c)
        union = gt + pr - tp
        ious.append(tp / union if union else np.nan)
        accs.append(tp / gt if gt else np.nan)
        freqs.append(gt / target.size)
    ious_a = np.array(ious)
    return {
        "mIoU": np.nanmean(ious_a),
        "fwIoU": np.nansum(np.array(freqs) * np.nan_to_num(ious_a)),
        "pixel_acc": np.mean(pred == target),
        "mean_class_acc": np.nanmean(accs),
    }, ious_a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_numpy_reference_with_ignored_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 6
    target = rng.integers(0, num_classes - 1, size=(3, 17, 23))  # class 5 never in the truth
    target[rng.random(target.shape) < 0.2] = 255
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes, size=target.shape))
    pred = np.where(pred == 255, 0, pred)
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), num_classes).permute(0, 3, 1, 2).float()

    metric = SegmentationMetrics(num_classes)
    metric.update(logits[:2], torch.from_numpy(target[:2]))  # two updates = one pass over a split
    metric.update(logits[2:], torch.from_numpy(target[2:]))
    confusion = metric.compute()
    ours = scores_from_confusion(confusion)
    expected, expected_iou = numpy_reference(pred, target, num_classes)

    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_allclose(per_class_iou(confusion).numpy(), expected_iou, equal_nan=False)


def test_hand_built_confusion_matrix() -> None:
    confusion = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    scores = scores_from_confusion(confusion)
    # IoU: class 0 = 3/4, class 1 = 2/5, class 2 = 0/2 (predicted, never true) -> mean of three
    assert scores["mIoU"] == pytest.approx((3 / 4 + 2 / 5 + 0) / 3)
    assert scores["pixel_acc"] == pytest.approx(5 / 8)
    assert scores["mean_class_acc"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert scores["fwIoU"] == pytest.approx(4 / 8 * 3 / 4 + 4 / 8 * 2 / 5)


def test_absent_class_is_left_out_of_the_mean() -> None:
    confusion = torch.tensor([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    assert scores_from_confusion(confusion)["mIoU"] == pytest.approx(1.0)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_predicted_classes_are_argmax_with_its_ties_and_nans(layout: str, dtype: torch.dtype) -> None:
    """The predicted class is torch.argmax's: the first of tied maxima, a NaN wins, any memory layout."""
    from segnas.metrics import predicted_classes

    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (3, 6, 9, 7), generator=generator).to(dtype)  # many exact ties
    logits[0, 4, 2, 3] = float("nan")
    logits[1, :, 0, 0] = float("nan")  # all NaN: the first
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    predicted = predicted_classes(logits)
    assert predicted.dtype == torch.int64 and predicted.shape == (3, 9, 7)
    assert torch.equal(predicted, torch.from_numpy(logits.float().numpy().argmax(1)))
    assert torch.equal(predicted, logits.argmax(1))
    assert predicted[0, 2, 3] == 4 and predicted[1, 0, 0] == 0


def test_logits_update_the_confusion_matrix_by_their_argmax() -> None:
    logits = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 4, (2, 5, 6), generator=torch.Generator().manual_seed(2))
    target[0, 0, :3] = 255
    from_logits, from_ids = SegmentationMetrics(4), SegmentationMetrics(4)
    from_logits.update(logits, target)
    from_ids.update(logits.argmax(1), target)
    assert torch.equal(from_logits.compute(), from_ids.compute())
