"""The config check that runs before any data is loaded or any network is built, so a mistake is
reported naming its key within about a second.

Types and choices were checked when Hydra composed the config (the schemas in
:mod:`segnas.settings`); :func:`check_config` builds the typed settings (ranges and the rules
between keys, in each dataclass's ``__post_init__``; the searcher's rules against the shared
settings) and adds what only the task knows. The one check that must import the data module's
class (does the data carry what ``task_type`` learns?) runs last.
"""

from __future__ import annotations

from omegaconf import DictConfig

from segnas import targets
from segnas.errors import ConfigError
from segnas.settings import schema
from segnas.settings.run import RunSettings, Task

#: ``trainer.precision`` values Lightning accepts (lightning_fabric's ``_PRECISION_INPUT``).
PRECISIONS = (
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)


def check_config(cfg: DictConfig) -> RunSettings:
    """The run's typed settings, every rule checked; a mistake is a ``ConfigError`` naming its key."""
    if not cfg.get("run_dir"):
        raise ConfigError("run_dir is not set (it defaults to hydra.runtime.output_dir under segnas.run)")
    run = schema.load(cfg)
    if run.task in (Task.train, Task.profile) and not run.arch:
        from segnas import spaces  # only to list the presets in the message (imports timm)

        raise ConfigError(
            f"task={run.task} needs arch=<preset or genotype file>; presets: {', '.join(sorted(spaces.presets()))}"
        )
    if run.task in (Task.eval, Task.quantize) and not run.checkpoint:
        raise ConfigError(f"task={run.task} needs checkpoint=<.ckpt, model.pt or run dir>")
    if run.task == Task.quantize and run.task_type != "segmentation":
        raise ConfigError(f"task=quantize scores segmentation networks; task_type={run.task_type} is not supported yet")
    if run.task in (Task.search, Task.tabulate, Task.replay) and run.searcher is None:
        raise ConfigError(f"task={run.task} needs searcher=<name> (conf/searcher/): e.g. searcher=autodeeplab")
    if run.task == Task.replay and not run.replay.table:
        raise ConfigError("task=replay needs replay.table=<a task=tabulate run directory>")
    _check_trainer(run.trainer or {})
    targets.check(run)
    if run.task == Task.search and run.task_type not in run.searcher.task_types:
        raise ConfigError(
            f"searcher={run.searcher.name} does not support task_type={run.task_type} "
            f"(searcher.task_types: {[str(t) for t in run.searcher.task_types]})"
        )
    return run


def _check_trainer(trainer: dict) -> None:
    """The Lightning Trainer's arguments have no schema (any Trainer argument may be added with
    ``+trainer.<name>``): the two mistakes that would only surface after minutes."""
    if "precision" in trainer and trainer["precision"] not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={trainer['precision']}: expected one of {', '.join(map(str, PRECISIONS))}"
        )
    if trainer.get("sync_batchnorm") and trainer.get("accelerator") == "cpu":
        raise ConfigError(
            "trainer.sync_batchnorm=true: expected false with trainer.accelerator=cpu (SyncBatchNorm needs GPUs)"
        )
