"""Every config group composes, and every option that can exist on this machine instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segnas import pipeline
from segnas.tasks import TASKS
from tests.conftest import CONFIG_DIR


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def compose_with(*overrides: str, hydra_node: bool = False):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_node)


def test_groups_the_contract_names_exist() -> None:
    assert set(options("data")) >= {"synthetic", "voc", "cityscapes", "ade20k", "folder"}
    assert set(options("trainer")) == {"cpu", "gpu", "ddp", "ddp_spawn"}
    assert set(options("logger")) == {"wandb", "csv"}
    assert set(options("hardware")) >= {"cpu", "gpu", "onnx_cpu"}
    assert set(options("searcher")) >= {"autodeeplab"}
    assert set(options("hydra/launcher")) == {"local", "slurm"}


@pytest.mark.parametrize("name", options("data"))
def test_data_configs_instantiate(name: str, tmp_path: Path) -> None:
    classes = ["data.num_classes=4"] if name == "folder" else []
    root = [] if name == "synthetic" else [f"data.root={tmp_path}"]
    cfg = compose_with(f"data={name}", *root, *classes)
    datamodule = instantiate(cfg.data)
    assert datamodule.num_classes == cfg.data.num_classes
    assert type(datamodule).__name__.lower().startswith(name.replace("_", "")[:4])


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_configs_compose(name: str, tmp_path: Path) -> None:
    cfg = compose_with(f"trainer={name}")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if cfg.trainer.accelerator == "cpu":
        trainer = instantiate(cfg.trainer, default_root_dir=str(tmp_path), logger=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("name", options("logger"))
def test_logger_configs_instantiate(name: str, tmp_path: Path) -> None:
    from segnas.report.loggers import build_logger, close_loggers

    logger = build_logger(compose_with(f"logger={name}").logger, tmp_path)
    assert logger is not None and logger.save_dir == str(tmp_path)
    close_loggers()


@pytest.mark.parametrize("name", options("hardware"))
def test_hardware_configs_instantiate(name: str) -> None:
    target = instantiate(compose_with(f"hardware={name}").hardware)
    assert target.name == name


@pytest.mark.parametrize("name", options("train/optimizer"))
def test_optimizer_configs_are_partials(name: str) -> None:
    import torch

    factory = instantiate(compose_with(f"train/optimizer={name}").train.optimizer)
    assert isinstance(factory([torch.nn.Parameter(torch.zeros(1))]), torch.optim.Optimizer)


@pytest.mark.parametrize("name", options("hydra/launcher"))
def test_launchers_compose(name: str) -> None:
    cfg = compose_with(f"hydra/launcher={name}", hydra_node=True)
    assert "submitit" in cfg.hydra.launcher._target_.lower()


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_presets_compose_and_pass_the_config_check(name: str, tmp_path: Path) -> None:
    cfg = compose_with(f"experiment={name}", f"run_dir={tmp_path}")
    OmegaConf.resolve(cfg)
    pipeline.check_config(cfg)
    assert cfg.task in TASKS


def test_the_default_task_is_the_autodeeplab_search() -> None:
    cfg = compose_with()
    assert cfg.task == "search" and cfg.searcher.name == "autodeeplab"
