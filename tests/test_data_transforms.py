"""Train/eval transforms: padding is ignore (the albumentations 2.x fill_mask trap) and the mean
colour, eval keeps the whole image and its labels exact, depth follows the geometry, and
augmentation is reproducible by seed."""

import cv2
import numpy as np
import pytest
import torch

from segnas.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform


def raw_sample(height: int = 20, width: int = 24, depth: bool = False) -> dict:
    rng = np.random.default_rng(0)
    sample = {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "mask": rng.integers(0, 5, (height, width), dtype=np.uint8),
        "name": "x",
    }
    if depth:
        sample["depth"] = rng.uniform(1, 10, (height, width)).astype(np.float32)
    return sample


def make_train(crop: int = 48, scale=(1.0, 1.0), seed: int = 0):
    return train_transform(crop, scale, IMAGENET_MEAN, IMAGENET_STD, 255, seed)


def test_train_pads_mask_with_ignore_and_image_with_the_mean_colour():
    out = make_train(crop=48)(raw_sample(20, 24))
    assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (48, 48) and out["mask"].dtype == torch.int64
    padded = out["mask"] == 255
    assert int((~padded).sum()) == 20 * 24
    assert torch.equal(out["image"][:, padded], torch.zeros(3, int(padded.sum())))  # 0 after normalising


def test_train_normalises_with_mean_and_std():
    sample = raw_sample(32, 32)
    sample["image"][:] = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    out = make_train(crop=32)(sample)
    assert out["image"].abs().max() < 0.02


def test_train_scale_range_is_applied():
    out = make_train(crop=16, scale=(2.0, 2.0))(raw_sample(16, 16))
    assert out["mask"].shape == (16, 16) and not (out["mask"] == 255).any()
    out = make_train(crop=16, scale=(0.5, 0.5))(raw_sample(16, 16))
    assert int((out["mask"] != 255).sum()) == 8 * 8


def test_train_is_reproducible_by_seed_and_reseed_changes_it():
    first = make_train(crop=16, scale=(0.5, 2.0), seed=1)(raw_sample(32, 32))["mask"]
    again = make_train(crop=16, scale=(0.5, 2.0), seed=1)(raw_sample(32, 32))["mask"]
    assert torch.equal(first, again)
    outs = []
    for seed in range(4):
        transform = make_train(crop=16, scale=(0.5, 2.0), seed=1)
        transform.reseed(seed + 100)
        outs.append(transform(raw_sample(32, 32))["mask"])
    assert any(not torch.equal(outs[0], other) for other in outs[1:])


@pytest.mark.parametrize("size", [(20, 24), (60, 100)])
def test_eval_keeps_the_whole_image_and_its_labels_at_any_size(size):
    sample = raw_sample(*size)
    out = eval_transform(IMAGENET_MEAN, IMAGENET_STD)(sample)
    assert out["image"].shape == (3, *size)
    assert torch.equal(out["mask"], torch.from_numpy(sample["mask"]).long())
    expected = (sample["image"] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(out["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_depth_follows_geometry_and_padding_is_marked(mode):
    sample = raw_sample(20, 24, depth=True)
    if mode == "train":
        out, size = make_train(crop=32)(sample), (32, 32)
    else:
        out, size = eval_transform(IMAGENET_MEAN, IMAGENET_STD)(sample), (20, 24)
    depth, valid = out["depth"], out["depth_valid"]
    assert depth.shape == (1, *size) and depth.dtype == torch.float32
    assert valid.shape == (1, *size) and valid.dtype == torch.bool
    assert torch.equal(valid[0], out["mask"] != 255)
    assert (depth[~valid] == 0).all() and (depth[valid] >= 1).all()
    assert torch.isfinite(depth).all()
    if mode == "eval":
        assert torch.equal(depth[0], torch.from_numpy(sample["depth"]))


def test_opencv_is_sequential_so_forked_workers_cannot_deadlock():
    assert cv2.getNumThreads() == 1
