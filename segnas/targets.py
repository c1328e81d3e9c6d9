"""What the networks predict: ``task_type=segmentation`` (class scores, the default) or
``task_type=depth`` (one channel of depth in metres).

The key is read here only, so the data check, the networks' output channels, the training
module, the checkpoint monitor and the rule that picks the best retrained candidate agree.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from segnas.errors import ConfigError

SEGMENTATION = "segmentation"
DEPTH = "depth"
TASK_TYPES = (SEGMENTATION, DEPTH)

#: The scores each task type's validation computes (:mod:`segnas.metrics`), named here so the
#: config checks can list them without importing torchmetrics.
SCORES: dict[str, tuple[str, ...]] = {
    SEGMENTATION: ("mIoU", "fwIoU", "pixel_acc", "mean_class_acc"),
    DEPTH: ("RMSE", "REL", "delta1"),
}

#: The validation score that ranks networks of each task type, and its direction.
SELECTION: dict[str, tuple[str, str]] = {SEGMENTATION: ("mIoU", "max"), DEPTH: ("RMSE", "min")}


def task_type(cfg: DictConfig) -> str:
    """``cfg.task_type`` checked (absent means segmentation, as configs before the key)."""
    value = cfg.get("task_type", SEGMENTATION)
    if value not in TASK_TYPES:
        raise ConfigError(f"task_type={value}: expected one of {', '.join(TASK_TYPES)}")
    return str(value)


def out_channels(cfg: DictConfig, num_classes: int) -> int:
    """Output channels of the networks built for ``cfg``: the class count, or 1 for depth."""
    return 1 if task_type(cfg) == DEPTH else int(num_classes)


def check_checkpoint(cfg: DictConfig, predicts: int, data_classes: int) -> None:
    """A checkpoint's network (``predicts`` output channels) fits the run's data and task type, or
    a named error before any work (``task=eval``, ``task=quantize``)."""
    needed = out_channels(cfg, data_classes)
    if needed != predicts:
        raise ConfigError(
            f"checkpoint={cfg.checkpoint} predicts {predicts} channels but task_type={task_type(cfg)} "
            f"with data.num_classes={data_classes} needs {needed}"
        )


def check(run: Any) -> None:
    """The data must carry what the task learns (``run``: the typed
    :class:`~segnas.settings.run.RunSettings`; imports the data module's class)."""
    target = run.data.get("_target_") if isinstance(run.data, dict) else getattr(run.data, "_target_", None)
    if not target:
        return
    try:
        datamodule = get_class(str(target))
    except Exception as err:
        raise ConfigError(f"data._target_={target}: cannot be imported ({err})") from err
    name = run.data.get("name") if isinstance(run.data, dict) else run.data.name
    if run.task_type == DEPTH and not getattr(datamodule, "has_depth", False):
        raise ConfigError(
            f"task_type=depth needs data with depth maps; data={name} has none (use data=synthetic or data=nyu_depth)"
        )
    if run.task_type == SEGMENTATION and not getattr(datamodule, "has_labels", True):
        raise ConfigError(f"data={name} has depth but no class labels: set task_type=depth")


def monitor(cfg: DictConfig) -> tuple[str, str]:
    """The logged key (``val/<score>``) and mode that pick ``best.ckpt``."""
    score, mode = SELECTION[task_type(cfg)]
    return f"val/{score}", mode


def best(cfg: DictConfig, entries: list[dict[str, Any]], prefix: str = "val") -> dict[str, Any]:
    """The entry with the best ``<prefix>_<score>`` for the task (highest mIoU, lowest RMSE)."""
    score, mode = SELECTION[task_type(cfg)]
    key = f"{prefix}_{score}"
    return (max if mode == "max" else min)(entries, key=lambda entry: entry[key])
