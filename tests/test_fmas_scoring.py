"""Scoring without fine-tuning: mIoU against a hand-built confusion matrix, and BatchNorm
recalibration against statistics computed by hand."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segnas.searchers.fmas.scoring import Scorer, confusion, recalibrate_bn


class FixedPrediction(nn.Module):
    """Returns one-hot logits of predictions given with the batch (images carry them in channel 0)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = x[:, 0].long()
        return nn.functional.one_hot(pred, self.num_classes).permute(0, 3, 1, 2).float()


def hand_miou(preds: np.ndarray, masks: np.ndarray, num_classes: int, ignore: int = 255) -> float:
    valid = masks != ignore
    conf = np.zeros((num_classes, num_classes))
    for t, p in zip(masks[valid], preds[valid]):
        conf[t, p] += 1
    ious = [
        conf[c, c] / (conf[c].sum() + conf[:, c].sum() - conf[c, c])
        for c in range(num_classes)
        if conf[c].sum() + conf[:, c].sum() > 0
    ]
    return float(np.mean(ious))


def test_miou_matches_a_hand_built_confusion_matrix() -> None:
    rng = np.random.default_rng(0)
    num_classes = 4
    batches, preds_all, masks_all = [], [], []
    for _ in range(3):
        preds = rng.integers(0, num_classes, size=(2, 8, 8))
        masks = rng.integers(0, num_classes, size=(2, 8, 8))
        masks[rng.random(masks.shape) < 0.1] = 255
        image = torch.zeros(2, 3, 8, 8)
        image[:, 0] = torch.from_numpy(preds).float()
        batches.append({"image": image, "mask": torch.from_numpy(masks)})
        preds_all.append(preds)
        masks_all.append(masks)
    scorer = Scorer(batches, [], num_classes, recalibrate=False)
    scores = scorer.score(FixedPrediction(num_classes))
    reference = hand_miou(np.concatenate(preds_all), np.concatenate(masks_all), num_classes)
    assert abs(scores["miou"] - reference) < 1e-9
    matrix = confusion(FixedPrediction(num_classes), batches, num_classes)
    assert int(matrix.sum()) == int(sum((m != 255).sum() for m in masks_all))


def conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_recalibration_computes_the_calibration_statistics_and_is_deterministic() -> None:
    net = conv_bn()
    images = [torch.randn(4, 3, 8, 8) * 3 + 1 for _ in range(3)]
    before = net[1].running_mean.clone()
    recalibrate_bn(net, images)
    with torch.no_grad():
        features = torch.cat([net[0](x) for x in images])  # the BN input over the whole calibration set
    mean = features.mean(dim=(0, 2, 3))
    # cumulative average of per-batch unbiased variances (equal batch sizes)
    var = torch.stack([net[0](x).detach().var(dim=(0, 2, 3), unbiased=True) for x in images]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net[1].running_var, var, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(before, net[1].running_mean)
    assert not net.training and net[1].momentum == 0.1
    again = conv_bn()
    recalibrate_bn(again, images)
    assert torch.equal(again[1].running_mean, net[1].running_mean)
    assert torch.equal(again[1].running_var, net[1].running_var)


def test_recalibration_restores_accuracy_when_statistics_are_wrong() -> None:
    """Pixels are class 1 where channel 0 exceeds its mean; a BN whose running mean is far off
    predicts one class everywhere, recalibration on the data's own statistics repairs it."""

    class Thresholder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(1, affine=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.bn(x[:, :1])
            return torch.cat([-z, z], dim=1)

    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        image = torch.randn(4, 3, 16, 16, generator=generator) + 5.0
        batches.append({"image": image, "mask": (image[:, 0] > 5.0).long()})
    net = Thresholder()
    net.bn.running_mean.fill_(50.0)  # statistics of another network: everything looks "low"
    net.eval()
    broken = Scorer(batches, [], 2, recalibrate=False).score(net)["miou"]
    fixed = Scorer(batches, batches, 2, recalibrate=True).score(net)["miou"]
    assert broken < 0.3 and fixed > 0.95


class Recording(nn.Module):
    """A conv + BN network that records the shape and memory format of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 3, 1))
        self.seen: list[tuple[tuple[int, ...], bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last)))
        return self.body(x)


def padded_batches(sizes: list[list[tuple[int, int]]], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Evaluation batches as the loader pads them: each image of ``sizes`` at the corner of a
    canvas of its batch's largest size, its true size in ``size``, the padding 255 in the mask."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch in sizes:
        h, w = max(s[0] for s in batch), max(s[1] for s in batch)
        image = torch.zeros(len(batch), 3, h, w)
        mask = torch.full((len(batch), h, w), 255, dtype=torch.long)
        for i, (ih, iw) in enumerate(batch):
            image[i, :, :ih, :iw] = torch.randn(3, ih, iw, generator=generator)
            mask[i, :ih, :iw] = torch.randint(0, 3, (ih, iw), generator=generator)
        batches.append({"image": image, "mask": mask, "size": torch.tensor(batch)})
    return batches


def test_the_val_subset_is_scored_in_batches_of_one_size_across_the_loaders_batches() -> None:
    """Same-size images of different loader batches go through the network together (up to
    ``batch_size``), in channels-last; the confusion matrix is the one of one image at a time."""
    sizes = [[(12, 16), (12, 16), (16, 12)], [(12, 16), (16, 12), (16, 12)], [(12, 16), (8, 8)]]
    batches = padded_batches(sizes)
    net = Recording().eval()
    reference = torch.zeros(3, 3, dtype=torch.long)
    for batch in batches:
        for i, (h, w) in enumerate(batch["size"].tolist()):
            one = {"image": batch["image"][i : i + 1, :, :h, :w], "mask": batch["mask"][i : i + 1, :h, :w]}
            reference += confusion(net, [one], 3).long()
    net.seen.clear()
    scorer = Scorer(batches, [], 3, recalibrate=False, batch_size=3)
    matrix = confusion(net, scorer.val_batches, 3)
    assert torch.equal(matrix.long(), reference)
    assert sorted(shape for shape, _ in net.seen) == sorted(
        [(3, 3, 12, 16), (1, 3, 12, 16), (3, 3, 16, 12), (1, 3, 8, 8)]
    )
    assert all(channels_last for shape, channels_last in net.seen if shape[0] > 1)
    assert scorer.images_per_score == 8
    net.seen.clear()
    Scorer(batches, [], 3, recalibrate=False).score(net)  # no batch_size: every same-size image at once
    assert sorted(shape for shape, _ in net.seen) == sorted([(4, 3, 12, 16), (3, 3, 16, 12), (1, 3, 8, 8)])


def test_recalibration_keeps_the_loaders_batches_and_their_statistics() -> None:
    """BatchNorm statistics are an average over the calibration batches as the loader made them
    (a different batching would give other statistics), so those batches are kept as they are."""
    generator = torch.Generator().manual_seed(1)
    calib = [{"image": torch.randn(4, 3, 8, 8, generator=generator) * 2 + 1} for _ in range(3)]
    reference = Recording()
    recalibrate_bn(reference, (b["image"] for b in calib))
    net = Recording()
    Scorer([], calib, 3, batch_size=12).prepare(net)
    assert [shape for shape, _ in net.seen] == [(4, 3, 8, 8)] * 3
    torch.testing.assert_close(net.body[1].running_mean, reference.body[1].running_mean)
    torch.testing.assert_close(net.body[1].running_var, reference.body[1].running_var)
