"""The evaluation protocol: whole images (or sliding windows) at full resolution scored against
the original masks, checked against confusion matrices built by hand with numpy; images of
different sizes batched together; calibration crops without padding."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import HydraException
from torch import nn

from segnas.data.datamodule import SegmentationDataModule
from segnas.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segnas.errors import ConfigError
from segnas.training.module import SegmentationModule

CLASSES = 5
LEVELS = np.array([20, 70, 120, 170, 220])  # red value of the pixels of each class


class ListSource:
    def __init__(self, samples: list[dict]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return dict(self.samples[index])


def scene(height: int, width: int, seed: int, ignore_border: bool = True) -> dict:
    """Pixels whose red channel is one of LEVELS: the red level a pixel has is the class the
    RedNet below predicts; the mask agrees with it on most pixels, not all."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, CLASSES, (height, width))
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[..., 0] = LEVELS[colour]
    mask = np.where(rng.random((height, width)) < 0.7, colour, rng.integers(0, CLASSES, (height, width)))
    mask = mask.astype(np.uint8)
    if ignore_border:
        mask[0, :] = 255
    return {"image": image, "mask": mask, "name": f"scene{seed}"}


class ListDataModule(SegmentationDataModule):
    def __init__(self, train: list[dict], val: list[dict], **kwargs) -> None:
        kwargs.setdefault("num_classes", CLASSES)
        kwargs.setdefault("crop_size", 32)
        kwargs.setdefault("batch_size", 2)
        super().__init__(**kwargs)
        self.splits = {"train": train, "val": val}

    def build_source(self, split: str) -> ListSource:
        return ListSource(self.splits[split])


class RedNet(nn.Module):
    """Per pixel, logit c = -(red - level_c)²: predicts the class whose red level is nearest,
    whatever the pixel's position or its neighbours, at any input size."""

    def __init__(self) -> None:
        super().__init__()
        levels = (torch.tensor(LEVELS / 255.0) - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
        self.register_buffer("levels", levels.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, :1] - self.levels) ** 2)


def hand_confusion(samples: list[dict]) -> np.ndarray:
    """Confusion matrix of RedNet on the raw samples, full resolution, ignore 255."""
    total = np.zeros((CLASSES, CLASSES), np.int64)
    for sample in samples:
        predicted = np.abs(sample["image"][..., 0, None].astype(int) - LEVELS).argmin(-1)
        keep = sample["mask"] != 255
        total += np.bincount(
            sample["mask"][keep].astype(int) * CLASSES + predicted[keep], minlength=CLASSES**2
        ).reshape(CLASSES, CLASSES)
    return total


def validate(module: pl.LightningModule, datamodule: SegmentationDataModule) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    datamodule.setup("validate")
    trainer.validate(module, dataloaders=datamodule.loader(datamodule.eval_dataset("val"), train=False), verbose=False)


VAL = [scene(45, 70, 1), scene(64, 40, 2), scene(45, 70, 3), scene(20, 24, 4)]  # two larger than the crop


def test_images_larger_than_the_crop_are_scored_at_full_resolution_against_their_masks() -> None:
    datamodule = ListDataModule(VAL[:2], VAL, eval_batch_size=3)  # a batch mixes three sizes
    module = SegmentationModule(RedNet(), CLASSES, optimizer=torch.optim.SGD)
    validate(module, datamodule)
    expected = hand_confusion(VAL)
    assert module.last_confusion.sum() == sum(int((s["mask"] != 255).sum()) for s in VAL)
    assert np.array_equal(module.last_confusion.numpy(), expected)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_the_score_does_not_depend_on_how_images_are_batched(batch_size: int) -> None:
    from segnas.evaluation import EvalProtocol

    datamodule = ListDataModule(VAL[:2], VAL, eval_batch_size=batch_size)
    module = SegmentationModule(
        RedNet(), CLASSES, optimizer=torch.optim.SGD, protocol=EvalProtocol("slide", (16, 24), (10, 16))
    )
    validate(module, datamodule)
    assert np.array_equal(module.last_confusion.numpy(), hand_confusion(VAL))


class WindowMeanNet(nn.Module):
    """Output = every channel's mean over the input window, broadcast over the window, plus the
    pixel itself: a prediction that depends on which window a pixel was seen in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x.mean(dim=(2, 3), keepdim=True)


def brute_force_slide(image: np.ndarray, window: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """mmsegmentation's slide_inference grid, written out with loops."""
    channels, height, width = image.shape
    win_h, win_w = min(window[0], height), min(window[1], width)
    total = np.zeros_like(image, dtype=np.float64)
    count = np.zeros((height, width))
    rows = max(height - win_h + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - win_w + stride[1] - 1, 0) // stride[1] + 1
    for r in range(rows):
        for c in range(cols):
            top, left = min(r * stride[0], height - win_h), min(c * stride[1], width - win_w)
            tile = image[:, top : top + win_h, left : left + win_w]
            total[:, top : top + win_h, left : left + win_w] += tile + tile.mean(axis=(1, 2), keepdims=True)
            count[top : top + win_h, left : left + win_w] += 1
    return total / count


@pytest.mark.parametrize(
    ("size", "window", "stride"),
    [
        ((45, 70), (16, 24), (10, 16)),
        ((45, 70), (45, 70), (30, 47)),
        ((20, 24), (32, 32), (21, 21)),
        ((1024 // 16, 2048 // 16), (769 // 16, 769 // 16), (513 // 16, 513 // 16)),  # Cityscapes at 1/16
    ],
)
def test_sliding_windows_average_the_logits_of_every_window_covering_a_pixel(size, window, stride) -> None:
    from segnas.evaluation import EvalProtocol

    images = torch.randn(2, 3, *size, dtype=torch.float64)
    predicted = EvalProtocol("slide", window, stride).predict(WindowMeanNet(), images)
    for image, output in zip(images, predicted):
        assert np.allclose(output.numpy(), brute_force_slide(image.numpy(), window, stride))


def test_whole_image_at_a_scale_resizes_the_logits_back_to_full_resolution() -> None:
    from segnas.evaluation import EvalProtocol

    images = torch.randn(1, 3, 45, 70)
    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        return x[:, :2]

    out = EvalProtocol("whole", scale=0.5).predict(net, images)
    assert calls == [(22, 35)] and out.shape == (1, 2, 45, 70)


def test_calibration_crops_are_never_padded_and_their_statistics_are_the_images() -> None:
    """Uniform images, some smaller than the crop: every calibration crop is one colour, so a
    BatchNorm recalibrated on them has exactly the mean of those colours; padding would pull
    the mean towards the fill."""
    from segnas.searchers.fmas.scoring import preload, recalibrate_bn

    colours = [200, 230, 180, 250]
    train = [
        {"image": np.full((h, w, 3), c, np.uint8), "mask": np.zeros((h, w), np.uint8), "name": str(i)}
        for i, ((h, w), c) in enumerate(zip([(20, 24), (40, 50), (32, 32), (24, 60)], colours))
    ]
    datamodule = ListDataModule(train, VAL, eval_batch_size=4)
    datamodule.setup()
    batches = preload(datamodule, datamodule.calib_subset(4))
    assert [tuple(b["image"].shape) for b in batches] == [(4, 3, 32, 32)]
    norm = nn.BatchNorm2d(3)
    recalibrate_bn(nn.Sequential(norm), [b["image"] for b in batches])
    normalised = [(c / 255.0 - m) / s for c in colours for m, s in [(IMAGENET_MEAN[0], IMAGENET_STD[0])]]
    assert norm.running_mean[0].item() == pytest.approx(float(np.mean(normalised)), abs=1e-5)


def test_train_crops_pad_bottom_right_with_the_mean_colour() -> None:
    """Training anchors a small image at the top-left (before the flip) and pads with the mean
    colour, 0 after normalisation: what a convolution's zero padding shows at any border, so a
    network trained so meets the same surroundings on whole, unpadded images."""
    from segnas.data.transforms import train_transform

    sample = scene(20, 24, 0, ignore_border=False)
    flips = set()
    for seed in range(8):
        out = train_transform(32, (1.0, 1.0), IMAGENET_MEAN, IMAGENET_STD, 255, seed)(sample)
        labelled = out["mask"] != 255
        assert labelled[:20].any(dim=1).all() and not labelled[20:].any()  # padded at the bottom
        columns = labelled.any(dim=0).nonzero().flatten().tolist()
        assert columns in (list(range(24)), list(range(8, 32)))  # left, or right after a flip
        flips.add(columns[0])
        assert torch.equal(out["image"][:, ~labelled], torch.zeros(3, int((~labelled).sum())))
    assert flips == {0, 8}


def test_eval_settings_are_checked_naming_the_key(make_cfg) -> None:
    from segnas.evaluation import eval_protocol
    from tests.conftest import compose_config

    assert eval_protocol(make_cfg()).mode == "whole"
    assert (
        eval_protocol(compose_config("data=cityscapes", tiny=False))
        .describe()
        .startswith("sliding windows 769x769, stride 513x513")
    )
    assert eval_protocol(make_cfg("eval.mode=slide", "eval.window=[16,24]")).stride == (11, 16)
    with pytest.raises(HydraException, match="eval.mode=tiles"):  # a choice: refused when Hydra composes
        make_cfg("eval.mode=tiles")
    for override, key in (
        ("eval.window=0", "eval.window"),
        ("eval.stride=[1,2,3]", "eval.stride"),
        ("eval.scale=0", "eval.scale"),
    ):
        with pytest.raises(ConfigError, match=key):
            eval_protocol(make_cfg(override))
