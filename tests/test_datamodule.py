"""The base DataModule: derived splits, batching rules, worker seeding, config instantiation."""

import hydra.utils
import numpy as np
import pytest
import torch

from segnas.data import SegmentationDataModule, SyntheticDataModule
from segnas.data.datamodule import SegmentationDataset
from segnas.errors import ConfigError, DatasetError
from tests.conftest import compose_config


def module(**kw) -> SyntheticDataModule:
    kw = {"crop_size": 32, "batch_size": 4, "train_size": 21, "val_size": 10, **kw}
    return SyntheticDataModule(**kw)


def names(dataset) -> list[str]:
    return [dataset.source[i]["name"] for i in dataset.indices]


def test_setup_is_idempotent_and_datasets_set_up_lazily():
    dm = module()
    train = dm.dataset("train")
    dm.setup("fit")
    dm.setup("validate")
    assert dm.dataset("train").source is train.source
    assert len(train) == 21 and len(dm.dataset("val")) == 10


def test_train_halves_disjoint_equal_deterministic():
    first_a, first_b = module(seed=1).train_halves()
    again_a, again_b = module(seed=1).train_halves()
    other_a, _ = module(seed=2).train_halves()
    assert len(first_a) == len(first_b) == 10
    assert not set(first_a.indices) & set(first_b.indices)
    assert first_a.indices == again_a.indices and first_b.indices == again_b.indices
    assert first_a.indices != other_a.indices
    sample = first_a[0]
    assert sample["image"].shape == (3, 32, 32)


def test_val_subset_is_a_seeded_prefix_with_eval_transform():
    dm = module(seed=3)
    subset = dm.val_subset(4)
    assert len(subset) == 4
    assert subset.indices == dm.val_subset(6).indices[:4] == module(seed=3).val_subset(4).indices
    assert len(dm.val_subset(100)) == 10
    assert subset.indices != module(seed=4).val_subset(4).indices
    assert names(subset)[0].startswith("val_")
    eval_sample = subset[0]
    raw = dm.source("val")[subset.indices[0]]
    assert torch.equal(eval_sample["mask"], torch.from_numpy(raw["mask"]).long())


def test_calib_subset_comes_from_train_with_eval_transform():
    dm = module(seed=5)
    calib = dm.calib_subset(6)
    assert len(calib) == 6 and names(calib)[0].startswith("train_")
    assert calib.indices == module(seed=5).calib_subset(6).indices
    raw = dm.source("train")[calib.indices[0]]
    assert torch.equal(calib[0]["mask"], torch.from_numpy(raw["mask"]).long())
    with pytest.raises(ValueError):
        dm.calib_subset(0)


def test_train_loader_drops_last_and_shuffles_by_seed():
    dm = module(seed=0)
    loader = dm.train_dataloader()
    assert loader.drop_last and len(loader) == 5
    batches = list(loader)
    assert all(b["image"].shape == (4, 3, 32, 32) for b in batches)
    assert batches[0]["mask"].dtype == torch.int64
    again = [b["name"] for b in module(seed=0).train_dataloader()]
    assert [b["name"] for b in batches] == again
    assert [b["name"] for b in module(seed=1).train_dataloader()] != again


def test_eval_loader_keeps_every_sample_with_eval_batch_size():
    dm = module(eval_batch_size=3)
    sizes = [len(b["name"]) for b in dm.val_dataloader()]
    assert sizes == [3, 3, 3, 1]
    assert [len(b["name"]) for b in dm.test_dataloader()] == sizes


def test_too_small_train_split_names_batch_size():
    dm = module(batch_size=8, train_size=12)
    a, _ = dm.train_halves()
    with pytest.raises(DatasetError, match="data.batch_size"):
        dm.loader(a, train=True)
    assert len(dm.loader(a, train=False)) == 1


class _SameSample:
    """Every index is the same image, so any difference between outputs is augmentation."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        image = np.arange(40 * 40 * 3, dtype=np.uint32).reshape(40, 40, 3) % 251
        return {"image": image.astype(np.uint8), "mask": np.zeros((40, 40), np.uint8), "name": "same"}


def test_workers_get_distinct_reproducible_augmentation():
    dm = module(batch_size=1, num_workers=2)
    dataset = SegmentationDataset(_SameSample(), dm._train_transform(0))
    loader = dm.loader(dataset, train=True)
    assert loader.persistent_workers
    first = [b["image"] for b in loader]
    assert not torch.equal(first[0], first[1])  # batches 0 and 1 come from different workers
    second = [b["image"] for b in dm.loader(dataset, train=True)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))


def test_base_class_needs_a_source():
    dm = SegmentationDataModule(num_classes=3, crop_size=8, batch_size=2)
    assert dm.class_names == ["class_0", "class_1", "class_2"]
    with pytest.raises(NotImplementedError):
        dm.setup()


@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 0},
        {"scale_range": (2.0, 1.0)},
        {"ignore_index": 3},
        {"class_names": ["a", "b"]},
        {"std": (1.0, 0.0, 1.0)},
    ],
)
def test_bad_base_config_is_a_config_error(kw):
    with pytest.raises(ConfigError):
        SegmentationDataModule(**{"num_classes": 5, "crop_size": 8, "batch_size": 2, **kw})


def test_hydra_instantiates_synthetic_config():
    cfg = compose_config("data=synthetic", "seed=11", tiny=False)
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm) is SyntheticDataModule
    assert dm.seed == 11 and dm.image_size == dm.crop_size == 64 and dm.num_classes == 5
    assert dm.name == "synthetic" and dm.batch_size == 8 and dm.num_workers == 0
