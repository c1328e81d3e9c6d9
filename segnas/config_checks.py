"""Config checks that run before any data is loaded or any network is built, so a mistake is
reported naming its key within about a second.

Everything here (and in :mod:`segnas.searchers.checks`) imports only omegaconf, hydra and
light segnas modules; the one check that must import the data module's class (does the data
carry what ``task_type`` learns?) runs last, after every key has been read.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from segnas import targets
from segnas.config_keys import Keys
from segnas.errors import ConfigError
from segnas.searchers.budget import Budget
from segnas.searchers.checks import check_searcher
from segnas.tasks import TASKS

#: ``train.scheduler`` (:func:`segnas.training.schedules.build_schedule`).
SCHEDULES = ("poly", "cosine", "constant")
#: ``trainer.precision`` values Lightning accepts (lightning_fabric's ``_PRECISION_INPUT``).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
#: ``retrain.selection``: what picks the winner among retrained candidates.
RETRAIN_SELECTION = ("holdout", "val")
#: ``eval.split``: what ``task=eval`` scores.
EVAL_SPLITS = ("val", "train")


def check_config(cfg: DictConfig) -> None:
    """Catch the config mistakes that would otherwise surface as a deep traceback, or only after
    minutes of training."""
    if cfg.get("task") not in TASKS:
        raise ConfigError(f"task={cfg.get('task')}: expected one of {', '.join(TASKS)}")
    if cfg.get("run_dir") in (None, ""):
        raise ConfigError("run_dir is not set (it defaults to hydra.runtime.output_dir under segnas.run)")
    keys = Keys(cfg)
    keys.integer("data.num_classes", low=2)
    keys.integer("data.crop_size")
    keys.integer("data.batch_size")
    keys.size("profile.input_size")
    keys.weights("model.backbone_weights")
    if cfg.task in ("train", "profile") and not cfg.get("arch"):
        from segnas import spaces  # only to list the presets in the message (imports timm)

        raise ConfigError(f"task={cfg.task} needs arch=<preset or genotype file>; presets: "
                          f"{', '.join(sorted(spaces.presets()))}")
    if cfg.task == "eval":
        if not cfg.get("checkpoint"):
            raise ConfigError("task=eval needs checkpoint=<.ckpt, model.pt or run dir>")
        keys.choice("eval.split", EVAL_SPLITS)
    _check_training(keys)
    _check_hardware(keys)
    if cfg.task == "search":
        keys.integer("retrain.epochs", low=0)
        keys.choice("retrain.selection", RETRAIN_SELECTION)
        keys.number("retrain.holdout", above=0, below=1)
        Budget.from_config(cfg)
        check_searcher(cfg)
    if cfg.task == "tabulate":
        keys.integer("tabulate.max_architectures")
        keys.integer("tabulate.chunk")
        keys.integer("tabulate.children", low=10)
        keys.integer("tabulate.architectures", low=10)
        keys.integer("tabulate.steps")
        keys.path("tabulate.from_run", "a finished task=search run directory (its search.csv)")
        keys.number("tabulate.surrogate_holdout", above=0, below=1)
        check_searcher(cfg)
    if cfg.task == "replay":
        keys.path("replay.table", "a task=tabulate run directory")
        if not cfg.replay.get("table"):
            raise ConfigError("task=replay needs replay.table=<a task=tabulate run directory>")
        keys.integer("replay.seeds")
        keys.integer("replay.first_seed", low=0)
        keys.integer("replay.evaluations", null=True)
        keys.number("replay.level", above=0, below=1)
        keys.integer("replay.workers", null=True)
        check_searcher(cfg)
    targets.check(cfg)


#: ``hardware.*`` counts every latency target takes, with their lower bounds.
HARDWARE_COUNTS = {"threads": 1, "warmup": 0, "runs": 1, "repeats": 1, "batch": 1}


def _check_hardware(keys: Keys) -> None:
    """The measurement counts of ``hardware=`` (a target's own constructor checks them again,
    but only when a search first prices a network)."""
    if OmegaConf.select(keys.node, "hardware") is None:
        return
    for key, low in HARDWARE_COUNTS.items():
        if OmegaConf.select(keys.node, f"hardware.{key}") is not None:
            keys.integer(f"hardware.{key}", low=low)


def _check_training(keys: Keys) -> None:
    """``train.*`` (every task that trains shares them) and the trainer's cheap sanity checks."""
    keys.choice("train.scheduler", SCHEDULES)
    keys.number("train.poly_power", above=0)
    keys.number("train.min_lr", low=0)
    keys.number("train.warmup_fraction", low=0, below=1)
    keys.integer("train.log_images", low=0)
    keys.partial("train.optimizer")
    keys.choice("trainer.precision", PRECISIONS)
    sync, accelerator = (OmegaConf.select(keys.node, f"trainer.{key}") for key in ("sync_batchnorm", "accelerator"))
    if sync and accelerator == "cpu":
        keys.fail("trainer.sync_batchnorm", "false with trainer.accelerator=cpu (SyncBatchNorm needs GPUs)")
