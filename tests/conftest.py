"""Shared fixtures: config composition exactly as ``segnas.run`` does it, with tiny settings."""

from __future__ import annotations

import os
from pathlib import Path

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

import segnas.run  # noqa: F401  (registers the run-id resolver used by hydra.run.dir)

CONFIG_DIR = segnas.run.CONFIG_DIR


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's multi-process tests rendezvous on a port of their own,
    below Linux's ephemeral range (32768-60999): Lightning otherwise picks a free ephemeral port
    by binding and releasing it, and a neighbouring worker's gloo connections could take it in
    between. A worker runs its tests one at a time, so one port serves them all.

    The workers also share out the cores (as Lightning does for DDP ranks), their own torch and
    the processes they start (``OMP_NUM_THREADS``): workers that each ran one thread per core
    would oversubscribe them, where every OpenMP thread that spins waits for a descheduled one
    (BENCHMARKS.md, "OpenMP wait policy")."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker and "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(29400 + int(worker.removeprefix("gw")))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: Small enough that a train/eval round trip takes seconds on 2 CPU cores.
TINY = [
    "data=synthetic",
    "data.crop_size=32",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "hardware.runs=2",
    "hardware.warmup=1",
    "train.log_images=2",
    # winners are not quantized (about 7 s a run): tests/test_quantize_summary.py turns it back on
    "quantize.in_summary=false",
]


@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))


@pytest.fixture(autouse=True)
def _own_weights_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs never read the user's ~/.cache/segnas: ``model.backbone_weights=auto`` (the auxcell and
    FMAS default) starts from random weights unless a test installs ImageNet weights itself."""
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path_factory.getbasetemp() / "no_segnas_cache"))


def compose_config(*overrides: str, tiny: bool = True) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides])


@pytest.fixture
def make_cfg(tmp_path: Path):
    """``make_cfg("task=train", ...)`` -> a composed config writing into tmp_path/run."""

    def make(*overrides: str, run_dir: Path | None = None, tiny: bool = True) -> DictConfig:
        return compose_config(f"run_dir={run_dir or tmp_path / 'run'}", *overrides, tiny=tiny)

    return make


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="session")
def supernet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FMAS's supernet without the minutes of training (benchmarks/fixtures.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("segnas_bench_fixtures", BENCHMARKS / "fixtures.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    return fixtures.write_untrained_supernet(tmp_path_factory.mktemp("supernet") / "model.pt", 5, 32)


#: The Auto-DeepLab search of test_autodeeplab_search (seconds), as compare overrides.
TINY_ADL = [
    "searcher.layers=3",
    "searcher.filter_multiplier=2",
    "searcher.blocks=2",
    "searcher.epochs=2",
    "searcher.warmup_epochs=1",
    "searcher.val_images=4",
    "searcher.batches_per_epoch=null",
    "searcher.network.filter_multiplier=2",
    "searcher.network.aspp_channels=8",
    "searcher.network.decoder_channels=8",
    "searcher.network.low_level_channels=4",
]


def compare_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    """task=compare of the tiny Auto-DeepLab search and its random baseline over seeds 0 and 1."""
    listed = ",".join(f'"{o}"' for o in TINY_ADL)
    return compose_config(
        "task=compare",
        f"run_dir={run_dir}",
        "compare.searchers=[autodeeplab]",
        f"compare.overrides.autodeeplab=[{listed}]",
        "compare.retrain_epochs=1",
        'compare.random_overrides=["searcher.samples=2"]',
        "compare.baselines=[]",
        *overrides,
    )


@pytest.fixture(scope="session")
def tiny_comparison(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One finished comparison (4 runs, W&B offline), shared by the compare and notebook tests."""
    from segnas import pipeline

    run_dir = tmp_path_factory.mktemp("compare") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        patch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))
        return run_dir, pipeline.run(compare_cfg(run_dir, "logger=wandb"))


# tiny dataset folders in the real formats, for the tests that read them ---------------------------

#: Height and width of the images the folder writers make.
H, W = 40, 48


def write_image(path: Path, height: int = H, width: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_mask(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8), mode="L")
    if palette:
        from segnas.data.datamodule import default_palette  # torch: not before pytest_configure

        image.putpalette(default_palette(256).ravel().tolist())
    image.save(path)


def quadrants(top_left: int, top_right: int, bottom_left: int, bottom_right: int) -> np.ndarray:
    mask = np.empty((H, W), np.uint8)
    mask[: H // 2, : W // 2], mask[: H // 2, W // 2 :] = top_left, top_right
    mask[H // 2 :, : W // 2], mask[H // 2 :, W // 2 :] = bottom_left, bottom_right
    return mask


VOC_MASK = quadrants(0, 15, 255, 20)


def write_voc(
    root: Path,
    train=("2007_000001", "2007_000002"),
    val=("2007_000003",),
    train_split: str = "train",
    mask_dir: str = "SegmentationClass",
) -> Path:
    for name in (*train, *val):
        write_image(root / "JPEGImages" / f"{name}.jpg")
        write_mask(root / mask_dir / f"{name}.png", VOC_MASK, palette=True)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / f"{train_split}.txt").write_text("\n".join(train) + "\n")
    (lists / "val.txt").write_text("\n".join(val) + "\n")
    return root


CITY_MASK = quadrants(7, 26, 0, 4)  # road, car, unlabeled, static


def write_cityscapes(root: Path, label_values: np.ndarray = CITY_MASK, per_split: int = 2) -> Path:
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for k in range(per_split):
            stem = f"{city}_{k:06d}_000019"
            write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            write_mask(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_values)
    return root


def write_voc_layout(root: Path, num_classes: int, train: int = 8, val: int = 4) -> Path:
    """A tiny VOC2012-layout folder: JPEG images, palette PNG masks with a 255 border, split lists."""
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2008_{i:06d}" for i in range(train + val)]
    for name in ids:
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[8:30, 10:40] = rng.integers(1, num_classes)
        mask[0, :] = 255
        image = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
        image[mask > 0] //= 3
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg")
        png = Image.fromarray(mask, mode="P")
        png.putpalette([v for c in range(256) for v in (c, 255 - c, (7 * c) % 256)])
        png.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:train]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[train:]) + "\n")
    return root


# a searcher called as task=search calls it ------------------------------------------------------


def handed(cfg: DictConfig, resume: Path | None = None, logger=None) -> tuple:
    """The searcher's typed settings and the SearchContext ``task=search`` hands it for ``cfg``
    (into ``cfg.run_dir``, the data module built here)."""
    from hydra.utils import instantiate

    from segnas.settings import schema
    from segnas.tasks.search import context

    settings = schema.load(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return settings.searcher, context(cfg, settings, run_dir, resume, logger, instantiate(cfg.data))


def run_search(cfg: DictConfig, resume: Path | None = None, logger=None):
    """``task=search``'s search alone (no retraining), through the registry as the pipeline calls it."""
    from segnas.searchers.registry import registration

    settings, context = handed(cfg, resume, logger)
    return registration(settings.name).search()(settings, context)
