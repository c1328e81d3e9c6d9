"""Config checks that run before any data is loaded or any network is built, so a mistake is
reported naming its key within the time it takes to import torch."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from segnas import spaces, targets
from segnas.errors import ConfigError
from segnas.tasks import TASKS


def check_config(cfg: DictConfig) -> None:
    """Catch the config mistakes that would otherwise surface as a deep traceback."""
    if cfg.get("task") not in TASKS:
        raise ConfigError(f"task={cfg.get('task')}: expected one of {', '.join(TASKS)}")
    if cfg.get("run_dir") in (None, ""):
        raise ConfigError("run_dir is not set (it defaults to hydra.runtime.output_dir under segnas.run)")
    for key in ("num_classes", "crop_size", "batch_size"):
        value = OmegaConf.select(cfg, f"data.{key}")
        if not isinstance(value, int) or value < (2 if key == "num_classes" else 1):
            raise ConfigError(f"data.{key}={value}: expected a positive integer" +
                              (" >= 2" if key == "num_classes" else ""))
    size = OmegaConf.select(cfg, "profile.input_size")
    if size is None or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ConfigError(f"profile.input_size={size}: expected [H, W], two positive integers")
    if cfg.task in ("train", "profile") and not cfg.get("arch"):
        raise ConfigError(f"task={cfg.task} needs arch=<preset or genotype file>; presets: "
                          f"{', '.join(sorted(spaces.presets()))}")
    if cfg.task == "eval" and not cfg.get("checkpoint"):
        raise ConfigError("task=eval needs checkpoint=<.ckpt, model.pt or run dir>")
    targets.check(cfg)
