"""data=nyu_depth: a tiny fake ``nyu_depth_v2_labeled.mat`` in the release's HDF5 layout (axes
reversed by MATLAB's column-major storage) and the official ``splits.mat`` (1-based indices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")
from scipy.io import savemat  # noqa: E402  (after the skip: the module needs h5py)

from segnas import pipeline  # noqa: E402
from segnas.data import NYUDepthDataModule  # noqa: E402
from segnas.errors import ConfigError, DatasetError  # noqa: E402

FRAMES, HEIGHT, WIDTH = 6, 12, 16
TRAIN, TEST = [1, 3, 4, 6], [2, 5]  # 1-based, as in splits.mat


def frames() -> tuple[np.ndarray, np.ndarray]:
    """Upright frames (N, H, W, 3) and depths (N, H, W): every pixel says where it is."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    images = np.stack([np.stack([rows * 10 + n, cols * 10 + n, np.full_like(rows, 7 * n)], -1) for n in range(FRAMES)])
    depths = np.stack([1.0 + rows + cols / 100 + n for n in range(FRAMES)]).astype(np.float32)
    depths[:, 0, 0] = 0.0  # a missing measurement
    return images.astype(np.uint8), depths


def write_release(root: Path, split_format: str = "v5") -> Path:
    """What MATLAB v7.3 writes for images (H, W, 3, N) and depths (H, W, N): the reversed axes."""
    root.mkdir(parents=True, exist_ok=True)
    images, depths = frames()
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as handle:
        handle["images"] = images.transpose(0, 3, 2, 1)  # (N, 3, W, H)
        handle["depths"] = depths.transpose(0, 2, 1)  # (N, W, H)
        handle["labels"] = np.zeros((FRAMES, WIDTH, HEIGHT), np.uint16)
    splits = {"trainNdxs": np.array(TRAIN, np.float64)[:, None], "testNdxs": np.array(TEST, np.float64)[:, None]}
    if split_format == "v5":
        savemat(root / "splits.mat", splits)
    else:
        with h5py.File(root / "splits.mat", "w") as handle:
            for key, value in splits.items():
                handle[key] = value.T
    return root


def datamodule(root: Path, **options) -> NYUDepthDataModule:
    settings = {"root": str(root), "image_scale": 1.0, "crop_size": 16, "batch_size": 2, "scale_range": (1.0, 1.0)}
    return NYUDepthDataModule(**{**settings, **options})


@pytest.mark.parametrize("split_format", ["v5", "v7.3"])
def test_frames_come_out_upright_with_the_official_split(tmp_path: Path, split_format: str) -> None:
    dm = datamodule(write_release(tmp_path / "nyu", split_format))
    images, depths = frames()
    assert len(dm.source("train")) == 4 and len(dm.source("val")) == 2
    for split, listed in (("train", TRAIN), ("val", TEST)):
        for position, frame in enumerate(listed):
            raw = dm.source(split)[position]
            assert raw["name"] == f"nyu_{frame:04d}"
            np.testing.assert_array_equal(raw["image"], images[frame - 1])
            np.testing.assert_array_equal(raw["depth"], depths[frame - 1])
            assert np.all(raw["mask"] == 255)


def test_batches_carry_depth_valid_where_measured(tmp_path: Path) -> None:
    dm = datamodule(write_release(tmp_path / "nyu"))
    batch = next(iter(dm.val_dataloader()))  # whole frames, at their own size
    assert batch["image"].shape == (2, 3, HEIGHT, WIDTH) and batch["depth"].shape == (2, 1, HEIGHT, WIDTH)
    assert batch["size"].tolist() == [[HEIGHT, WIDTH]] * 2
    valid = batch["depth_valid"]
    assert not valid[:, 0, 0, 0].any()  # the missing pixel
    assert int(valid.sum()) == 2 * (HEIGHT * WIDTH - 1)
    _, depths = frames()
    expected = torch.from_numpy(depths[TEST[0] - 1])
    torch.testing.assert_close(batch["depth"][0, 0], expected)


def test_image_scale_halves_frames(tmp_path: Path) -> None:
    raw = datamodule(write_release(tmp_path / "nyu"), image_scale=0.5).source("train")[0]
    assert raw["image"].shape == (HEIGHT // 2, WIDTH // 2, 3) and raw["depth"].shape == (HEIGHT // 2, WIDTH // 2)


def test_missing_corrupt_or_mismatched_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nyu_depth_v2_labeled.mat does not exist"):
        datamodule(tmp_path / "empty").setup()
    root = write_release(tmp_path / "nyu")
    (root / "broken.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DatasetError, match="broken.mat cannot be read"):
        datamodule(root, file="broken.mat").setup()
    with h5py.File(root / "odd.mat", "w") as handle:
        handle["images"] = np.zeros((2, 3, 4, 5), np.uint8)
        handle["depths"] = np.zeros((2, 5, 4), np.float32)  # H and W swapped: a wrongly written file
    with pytest.raises(DatasetError, match="do not match"):
        datamodule(root, file="odd.mat").setup()
    savemat(root / "bad_splits.mat", {"trainNdxs": np.array([[0], [2]]), "testNdxs": np.array([[7]])})
    with pytest.raises(DatasetError, match="1-based frame indices"):
        datamodule(root, split_file="bad_splits.mat").setup()
    with pytest.raises(DatasetError, match="data.root is not set"):
        NYUDepthDataModule(root=None)


def test_segmentation_on_depth_only_data_is_refused(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task_type=depth"):
        pipeline.check_config(make_cfg("task=search", "searcher=auxcell", "data=nyu_depth", tiny=False))


def test_train_then_eval_a_depth_network_on_the_fake_release(make_cfg, tmp_path: Path) -> None:
    from tests.conftest import TINY

    root = write_release(tmp_path / "nyu")
    data = [o for o in TINY if not o.startswith("data")] + [
        "task_type=depth",
        "data=nyu_depth",
        f"data.root={root}",
        "data.image_scale=1.0",
        "data.crop_size=16",
        "data.batch_size=2",
        "data.num_workers=0",
        "hardware.runs=1",
    ]
    summary = pipeline.run(make_cfg(*data, "task=train", "arch=auxcell-arch0", tiny=False))
    assert summary["task_type"] == "depth" and summary["val_RMSE"] > 0 and 0 <= summary["val_delta1"] <= 1
    scored = pipeline.run(
        make_cfg(*data, "task=eval", f"checkpoint={summary['model']}", tiny=False, run_dir=tmp_path / "eval")
    )
    assert scored["val_RMSE"] == pytest.approx(summary["val_RMSE"], rel=1e-4)
    assert scored["val_delta1"] == pytest.approx(summary["val_delta1"], abs=1e-6)
    with pytest.raises(ConfigError, match="predicts 1 channels"):
        pipeline.run(make_cfg("task=eval", f"checkpoint={summary['model']}", run_dir=tmp_path / "e2"))
