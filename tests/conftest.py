"""Shared fixtures: config composition exactly as ``segnas.run`` does it, with tiny settings."""

from __future__ import annotations

import os
from pathlib import Path

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

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
TINY_ADL = ["searcher.layers=3", "searcher.filter_multiplier=2", "searcher.blocks=2", "searcher.epochs=2",
            "searcher.warmup_epochs=1", "searcher.val_images=4", "searcher.batches_per_epoch=null",
            "searcher.network.filter_multiplier=2", "searcher.network.aspp_channels=8",
            "searcher.network.decoder_channels=8", "searcher.network.low_level_channels=4"]


def compare_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    """task=compare of the tiny Auto-DeepLab search and its random baseline over seeds 0 and 1."""
    listed = ",".join(f'"{o}"' for o in TINY_ADL)
    return compose_config("task=compare", f"run_dir={run_dir}", "compare.searchers=[autodeeplab]",
                          f"compare.overrides.autodeeplab=[{listed}]", "compare.retrain_epochs=1",
                          'compare.random_overrides=["searcher.samples=2"]', "compare.baselines=[]", *overrides)


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
