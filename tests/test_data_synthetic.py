"""Synthetic scenes: deterministic, labelled in range, every class present, class identity needs
shape AND texture (table and distractors), colour carries no class information, depth sane."""

import time
from collections import defaultdict

import numpy as np
import pytest
import torch

from segnas.data import SyntheticDataModule
from segnas.data.synthetic import CLASS_TABLE, MAX_CLASSES, SHAPES, TEXTURES, SceneSpec, render_scene
from segnas.errors import ConfigError


def module(**kw) -> SyntheticDataModule:
    kw = {"crop_size": 32, "batch_size": 4, "train_size": 24, "val_size": 8, **kw}
    dm = SyntheticDataModule(**kw)
    dm.setup()
    return dm


def raw_bytes(dm: SyntheticDataModule, split: str, index: int) -> bytes:
    sample = dm.source(split)[index]
    return sample["image"].tobytes() + sample["mask"].tobytes() + sample["depth"].tobytes()


def test_same_seed_identical_bytes_other_seed_or_split_differs():
    a, b, c = module(seed=7), module(seed=7, cache=False), module(seed=8)
    for i in (0, 5):
        assert raw_bytes(a, "train", i) == raw_bytes(b, "train", i)
        assert raw_bytes(a, "train", i) != raw_bytes(c, "train", i)
    assert raw_bytes(a, "train", 0) != raw_bytes(a, "val", 0)
    assert raw_bytes(a, "train", 3) != raw_bytes(a, "train", 4)


def test_cache_returns_the_generated_sample():
    dm = module()
    assert dm.source("train")[2] is dm.source("train")[2]


@pytest.mark.parametrize("num_classes", [2, 5, 13])
def test_labels_in_range_and_every_class_appears(num_classes):
    dm = module(num_classes=num_classes, train_size=64)
    seen = np.zeros(num_classes, int)
    for i in range(64):
        mask = dm.source("train")[i]["mask"]
        assert mask.dtype == np.uint8 and mask.max() < num_classes
        seen += np.bincount(mask.ravel(), minlength=num_classes)
    assert (seen > 0).all()
    assert seen[0] / seen.sum() < 0.9  # objects are a real share of the pixels


def test_class_names_follow_the_table():
    dm = module()
    assert dm.class_names == ["background", "circle-stripes", "square-dots", "circle-dots", "square-stripes"]
    assert dm.palette.shape == (5, 3) and dm.palette.dtype == np.uint8


@pytest.mark.parametrize("objects", [4, 8, 12, 16])
def test_class_table_neither_shape_nor_texture_alone_identifies(objects):
    table = CLASS_TABLE[:objects]
    textures_of, shapes_of = defaultdict(set), defaultdict(set)
    for shape, texture in table:
        textures_of[shape].add(texture)
        shapes_of[texture].add(shape)
    assert all(len(t) >= 2 for t in textures_of.values())
    assert all(len(s) >= 2 for s in shapes_of.values())


def test_table_pairs_are_distinct_and_from_the_pools():
    assert len(set(CLASS_TABLE)) == len(CLASS_TABLE) == MAX_CLASSES - 1
    assert all(s in SHAPES and t in TEXTURES for s, t in CLASS_TABLE)


@pytest.mark.parametrize("num_classes", range(2, MAX_CLASSES + 1))
def test_every_class_has_both_kinds_of_background_distractor(num_classes):
    spec = SceneSpec(num_classes)
    classes = set(spec.table)
    for (shape, texture), (same_shape, same_texture) in zip(spec.table, spec.distractors):
        assert same_shape and same_texture
        assert all(s == shape and (s, t) not in classes for s, t in same_shape)
        assert all(t == texture and (s, t) not in classes for s, t in same_texture)


def test_scenes_paint_distractors_as_background():
    spec = SceneSpec(5)
    class_shapes = {s for s, _ in spec.table}
    class_textures = {t for _, t in spec.table}
    shared_shape = shared_texture = 0
    for i in range(30):
        _, _, _, instances = render_scene(np.random.default_rng([0, 0, i]), 64, 64, spec)
        for inst in instances:
            if inst.label == 0:
                assert (inst.shape, inst.texture) not in spec.table
                shared_shape += inst.shape in class_shapes
                shared_texture += inst.texture in class_textures
            else:
                assert spec.table[inst.label - 1] == (inst.shape, inst.texture)
    assert shared_shape > 10 and shared_texture > 10


def test_colour_carries_no_class_information():
    spec = SceneSpec(5)
    sums, counts = np.zeros((5, 3)), np.zeros(5)
    for i in range(60):
        image, mask, _, _ = render_scene(np.random.default_rng([1, 0, i]), 64, 64, spec)
        for k in range(5):
            sums[k] += image[mask == k].sum(0)
            counts[k] += (mask == k).sum()
    means = sums / counts[:, None]
    assert np.abs(means - 127.5).max() < 20


def test_depth_is_finite_positive_and_far_objects_are_smaller():
    image, mask, depth, instances = render_scene(np.random.default_rng([0, 0, 3]), 64, 48, SceneSpec(5))
    assert image.shape == (64, 48, 3) and mask.shape == depth.shape == (64, 48)
    assert depth.dtype == np.float32 and np.isfinite(depth).all() and (depth > 0).all()
    radii = [inst.radius for inst in instances]
    depths = [inst.depth for inst in instances]
    assert depths == sorted(depths, reverse=True)  # painted far to near
    assert np.allclose(np.array(radii) * np.array(depths), radii[0] * depths[0])


def test_module_samples_carry_depth_and_validity():
    dm = module(crop_size=32, image_size=24)
    sample = dm.dataset("val")[0]  # whole, at the scene's own size
    assert sample["image"].shape == (3, 24, 24)
    assert sample["depth"].shape == sample["depth_valid"].shape == (1, 24, 24)
    assert sample["depth_valid"].all() and (sample["depth"] > 0).all()
    crop = dm.dataset("train")[0]  # training crops pad the scene: padding is invalid depth
    assert crop["depth"].shape == crop["depth_valid"].shape == (1, 32, 32)
    assert torch.equal(crop["depth_valid"][0], crop["mask"] != 255)
    assert (crop["depth"][~crop["depth_valid"]] == 0).all()
    assert dm.has_depth


def test_generation_is_fast():
    spec = SceneSpec(5)
    times = []
    for i in range(30):
        start = time.perf_counter()
        render_scene(np.random.default_rng([0, 0, i]), 64, 64, spec)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.005


@pytest.mark.parametrize("kw", [{"num_classes": 1}, {"num_classes": MAX_CLASSES + 1}, {"root": "/data"}])
def test_bad_config_is_a_config_error(kw):
    with pytest.raises(ConfigError, match="data\\."):
        SyntheticDataModule(**kw)
