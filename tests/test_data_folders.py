"""Real-dataset layouts read from tiny fixtures written here in each format, their label mapping,
and every bad input raising DatasetError that names the offending file."""

from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch

from segnas.data import ADE20KDataModule, CityscapesDataModule, FolderDataModule, VOCDataModule
from segnas.errors import ConfigError, DatasetError
from tests.conftest import (
    VOC_MASK,
    H,
    W,
    compose_config,
    quadrants,
    write_cityscapes,
    write_image,
    write_mask,
    write_voc,
)

ADE_MASK = quadrants(0, 1, 150, 13)


def write_ade(root: Path, label_values: np.ndarray = ADE_MASK) -> Path:
    base = root / "ADEChallengeData2016"
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for k in range(2):
            write_image(base / "images" / split / f"{prefix}_0000000{k}.jpg")
            write_mask(base / "annotations" / split / f"{prefix}_0000000{k}.png", label_values)
    return root


FOLDER_MASK = quadrants(0, 1, 2, 255)


def write_folder(root: Path) -> Path:
    write_image(root / "images" / "a.jpg")
    write_image(root / "images" / "b.PNG")
    write_image(root / "images" / "c.jpeg")
    for name in "abc":
        write_mask(root / "masks" / f"{name}.png", FOLDER_MASK)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("a\nb\n\n")
    (root / "splits" / "val.txt").write_text("c\n")
    return root


def voc(root: Path, **kw) -> VOCDataModule:
    dm = VOCDataModule(root=str(root), **{"crop_size": 64, "batch_size": 2, "scale_range": (1.0, 1.0), **kw})
    dm.setup()
    return dm


def voc_unset(root: Path, **kw) -> VOCDataModule:
    """A VOC module not yet set up, so setup errors surface in expect_error."""
    return VOCDataModule(root=str(root), **{"crop_size": 64, "batch_size": 2, **kw})


def expect_error(dm, fragment: str, split: str = "train", index: int | None = None) -> None:
    with pytest.raises(DatasetError) as info:
        dm.setup()
        if index is not None:
            dm.source(split)[index]
    assert fragment in str(info.value), str(info.value)


def test_voc_palette_mask_values_are_class_ids(tmp_path):
    dm = voc(write_voc(tmp_path / "voc"))
    raw = dm.source("train")[0]
    assert raw["image"].shape == (H, W, 3) and raw["image"].dtype == np.uint8
    assert np.array_equal(raw["mask"], VOC_MASK)
    assert raw["name"] == "2007_000001"
    assert dm.class_names[15] == "person" and len(dm.class_names) == 21


def test_voc_crop_bigger_than_image_pads_with_ignore(tmp_path):
    dm = voc(write_voc(tmp_path / "voc"))
    sample = dm.dataset("train")[0]
    assert sample["mask"].shape == (64, 64)
    kept = sample["mask"][sample["mask"] != 255]
    assert kept.numel() == int((VOC_MASK != 255).sum())
    assert set(kept.unique().tolist()) == {0, 15, 20}
    val = dm.dataset("val")[0]
    assert torch.equal(val["mask"][:H, :W], torch.from_numpy(VOC_MASK).long())
    assert (val["mask"][H:] == 255).all() and (val["mask"][:, W:] == 255).all()


def test_voc_nested_root_and_sbd_list_of_paths(tmp_path):
    root = write_voc(tmp_path / "dl" / "VOCdevkit" / "VOC2012")
    for name in ("2007_000001", "2007_000002", "2007_000003"):
        write_mask(root / "SegmentationClassAug" / f"{name}.png", VOC_MASK)
    lines = "/JPEGImages/2007_000001.jpg /SegmentationClassAug/2007_000001.png\n2007_000002\n"
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(lines)
    dm = voc(tmp_path / "dl", train_split="train_aug", mask_dir="SegmentationClassAug")
    assert [s[0] for s in dm.source("train").items] == ["2007_000001", "2007_000002"]
    assert np.array_equal(dm.source("train")[1]["mask"], VOC_MASK)


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    dm = CityscapesDataModule(root=str(write_cityscapes(tmp_path / "cs")), crop_size=64, batch_size=2)
    dm.setup()
    raw = dm.source("train")[0]
    assert raw["name"] == "aachen_000000_000019"
    assert np.array_equal(raw["mask"], quadrants(0, 13, 255, 255))
    assert len(dm.source("val")) == 2
    assert dm.class_names[13] == "car" and dm.palette.shape == (19, 3)
    assert tuple(dm.palette[0]) == (128, 64, 128)


def test_ade20k_other_is_ignored_and_ids_shift_by_one(tmp_path):
    write_ade(tmp_path / "ade")
    for root in (tmp_path / "ade", tmp_path / "ade" / "ADEChallengeData2016"):
        dm = ADE20KDataModule(root=str(root), crop_size=64, batch_size=2)
        dm.setup()
        raw = dm.source("val")[1]
        assert raw["name"] == "ADE_val_00000001"
        assert np.array_equal(raw["mask"], quadrants(255, 0, 149, 12))
        assert len(dm.class_names) == 150 and dm.class_names[0] == "wall"


def test_folder_matches_images_by_stem_any_extension(tmp_path):
    root = write_folder(tmp_path / "mine")
    dm = FolderDataModule(root=str(root), num_classes=3, class_names=["bg", "cat", "dog"], crop_size=64, batch_size=2)
    dm.setup()
    train = dm.source("train")
    assert [(n, img.name) for n, img, _ in train.items] == [("a", "a.jpg"), ("b", "b.PNG")]
    assert np.array_equal(train[1]["mask"], FOLDER_MASK)
    assert dm.source("val")[0]["name"] == "c"
    assert dm.class_names == ["bg", "cat", "dog"]


def test_folder_class_names_must_match_num_classes():
    with pytest.raises(ConfigError, match="class_names"):
        FolderDataModule(root="x", num_classes=3, class_names=["a", "b"], crop_size=8, batch_size=2)


def test_voc_layout_with_its_own_classes(tmp_path):
    root = write_voc(tmp_path / "voc")
    dm = voc(root, num_classes=24)
    assert dm.class_names[15] == "class_15" and len(dm.class_names) == 24
    assert np.array_equal(dm.source("train")[0]["mask"], VOC_MASK)
    expect_error(voc_unset(root, num_classes=3), "[15, 20]", index=0)


@pytest.mark.parametrize("cls", [CityscapesDataModule, ADE20KDataModule])
def test_fixed_class_counts_are_enforced(cls):
    with pytest.raises(ConfigError, match="data.num_classes"):
        cls(root="x", num_classes=7)


# ----- bad input: each names the file at fault ---------------------------------------------------


def test_missing_root_names_the_key_and_path(tmp_path):
    missing = tmp_path / "nowhere"
    expect_error(VOCDataModule(root=str(missing)), "data.root")
    expect_error(VOCDataModule(root=str(missing)), str(missing))
    expect_error(VOCDataModule(root=None), "data.root")


def test_root_without_the_layout_names_the_expected_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(VOCDataModule(root=str(tmp_path / "empty")), "JPEGImages")
    expect_error(CityscapesDataModule(root=str(tmp_path / "empty")), "leftImg8bit")


def test_missing_split_file(tmp_path):
    root = write_voc(tmp_path / "voc")
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    expect_error(VOCDataModule(root=str(root)), "val.txt")


@pytest.mark.parametrize("kind", ["JPEGImages", "SegmentationClass"])
def test_listed_id_without_image_or_mask(kind, tmp_path):
    root = write_voc(tmp_path / "voc")
    victim = next((root / kind).glob("2007_000002.*"))
    victim.unlink()
    expect_error(VOCDataModule(root=str(root)), victim.name)


def test_cityscapes_image_without_label_file(tmp_path):
    root = write_cityscapes(tmp_path / "cs")
    victim = root / "gtFine" / "val" / "lindau" / "lindau_000001_000019_gtFine_labelIds.png"
    victim.unlink()
    expect_error(CityscapesDataModule(root=str(root)), victim.name)


def test_mask_size_differs_from_image(tmp_path):
    root = write_voc(tmp_path / "voc")
    write_mask(root / "SegmentationClass" / "2007_000002.png", np.zeros((H, W + 1), np.uint8))
    expect_error(voc_unset(root), "2007_000002.png", index=1)


def test_voc_label_outside_range(tmp_path):
    root = write_voc(tmp_path / "voc")
    write_mask(root / "SegmentationClass" / "2007_000003.png", quadrants(0, 30, 1, 2), palette=True)
    dm = voc_unset(root)
    expect_error(dm, "2007_000003.png", split="val", index=0)
    expect_error(dm, "[30]", split="val", index=0)


def test_cityscapes_unknown_label_id(tmp_path):
    root = write_cityscapes(tmp_path / "cs", quadrants(7, 40, 0, 0))
    expect_error(CityscapesDataModule(root=str(root)), "aachen_000000_000019_gtFine_labelIds.png", index=0)


def test_ade20k_label_above_150(tmp_path):
    root = write_ade(tmp_path / "ade", quadrants(0, 151, 1, 1))
    expect_error(ADE20KDataModule(root=str(root)), "ADE_train_00000000.png", index=0)


def test_folder_rgb_mask_is_rejected(tmp_path):
    root = write_folder(tmp_path / "mine")
    write_image(root / "masks" / "a.png")
    expect_error(FolderDataModule(root=str(root), num_classes=3), "a.png", index=0)
    expect_error(FolderDataModule(root=str(root), num_classes=3), "single-channel", index=0)


def test_folder_ambiguous_image_stem(tmp_path):
    root = write_folder(tmp_path / "mine")
    write_image(root / "images" / "a.png")
    expect_error(FolderDataModule(root=str(root), num_classes=3), "a.png")


def test_folder_missing_image_names_the_id(tmp_path):
    root = write_folder(tmp_path / "mine")
    (root / "splits" / "val.txt").write_text("c\nzzz\n")
    expect_error(FolderDataModule(root=str(root), num_classes=3), "zzz")


@pytest.mark.parametrize("target", ["JPEGImages/2007_000001.jpg", "SegmentationClass/2007_000001.png"])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_or_mask(target, damage, tmp_path):
    root = write_voc(tmp_path / "voc")
    path = root / target
    data = path.read_bytes()
    path.write_bytes(b"not an image at all" if damage == "garbage" else data[: len(data) // 2])
    expect_error(voc_unset(root), path.name, index=0)


# ----- Hydra configs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "cls", "writer", "extra"),
    [
        ("voc", VOCDataModule, write_voc, {}),
        ("cityscapes", CityscapesDataModule, write_cityscapes, {}),
        ("ade20k", ADE20KDataModule, write_ade, {}),
        ("folder", FolderDataModule, write_folder, {"num_classes": 3}),
    ],
)
def test_hydra_instantiates_each_config(config, cls, writer, extra, tmp_path):
    root = writer(tmp_path / config)
    overrides = [
        f"data={config}",
        f"data.root={root}",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.crop_size=32",
        "seed=4",
        *(f"data.{key}={value}" for key, value in extra.items()),
    ]
    dm = hydra.utils.instantiate(compose_config(*overrides, tiny=False).data)
    assert type(dm) is cls and dm.name == config and dm.seed == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].dtype == torch.int64
