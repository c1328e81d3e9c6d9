"""``searcher=auxcell``: the keys of conf/searcher/auxcell.yaml, checked before the search.

The held-out fraction against the size of the training split is checked where the data is
(:meth:`segnas.searchers.auxcell.splits.SearchData.split`), children per round against the
number of ranks once the ranks have joined, and whether CUDA is there when a device is picked.
"""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig

from segnas import targets
from segnas.config_keys import Keys, is_int, is_number

#: ``searcher.controller.algorithm``: how the controller learns (uniform: random search).
POLICIES = ("ppo", "reinforce", "uniform")
#: ``searcher.controller.positions``: the cell-position choices (see ``auxcell.decisions``).
POSITIONS = ("extended", "released")
#: ``searcher.stage2.loss_resolution``: the images' labels, or labels resized to the output.
LOSS_RESOLUTIONS = ("labels", "output")
#: The ``searcher.reward`` key that lists the reward's metrics, per task type.
REWARD_KEYS = {targets.SEGMENTATION: "metrics", targets.DEPTH: "depth_metrics"}


def check(cfg: DictConfig, keys: Keys) -> None:
    """Children, controller, losses, both training stages, early stopping and the reward."""
    keys.names("task_types", targets.TASK_TYPES)
    children = keys.integer("children")
    keys.integer("children_per_round", null=True)
    keys.device("device")
    keys.integer("top_k", high=children, why=f"at most {keys.name('children')}={children}")
    if not isinstance(keys.raw("backbone"), str) or not keys.raw("backbone"):
        keys.fail("backbone", "the name of a timm encoder, e.g. mobilenetv2_100")
    keys.path("teacher", "checkpoint of a task=train run (.ckpt, model.pt or run dir)")
    for key in ("width", "sep_repeats"):
        keys.integer(key)
    keys.integer("calibrate_batches", low=0)
    keys.weights("backbone_weights")
    _controller(keys)
    keys.number("loss.aux_weight", low=0)
    keys.flag("loss.aux_cell")
    keys.number("loss.kd_weight", low=0)
    keys.flag("stage1.cache")
    keys.device("stage1.cache_device")
    for key in ("stage1.num_crops", "stage1.epochs"):
        keys.integer(key)
    keys.integer("stage1.batch_size", low=2, why="BatchNorm after global pooling needs two images")
    _scale_range(keys)
    _optimiser(keys, "stage1")
    _early_stopping(keys)
    if keys.flag("stage2.enabled"):
        Keys(cfg).integer("data.batch_size", low=2,
                          why=f"stage 2 ({keys.name('stage2.enabled')}=true) trains on data.batch_size images: "
                              "BatchNorm after global pooling needs two")
    keys.integer("stage2.epochs")
    keys.integer("stage2.max_batches", null=True)
    keys.number("stage2.encoder_lr", above=0)
    keys.number("stage2.encoder_momentum", low=0, below=1)
    keys.number("stage2.encoder_weight_decay", low=0)
    keys.choice("stage2.loss_resolution", LOSS_RESOLUTIONS)
    _optimiser(keys, "stage2")
    for kind, key in REWARD_KEYS.items():
        keys.names(f"reward.{key}", targets.SCORES[kind])
    _omit_classes(cfg, keys)
    holdout = keys.number("reward.holdout", low=0, below=1)
    keys.integer("reward.holdout_min", low=0 if holdout > 0 else 1,
                 why=f"with {keys.name('reward.holdout')}=0 it is the number of held-out images")
    keys.integer("reward.crop_size", null=True)
    keys.integer("retrain_epochs", low=0)


def _controller(keys: Keys) -> None:
    keys.choice("controller.algorithm", POLICIES)
    keys.choice("controller.positions", POSITIONS)
    for key in ("hidden_size", "num_layers", "ppo.buffer_size", "ppo.minibatch_size", "ppo.epochs"):
        keys.integer(f"controller.{key}")
    keys.number("controller.lr", above=0)
    keys.number("controller.baseline_decay", low=0, high=1)
    keys.number("controller.grad_clip", above=0)
    keys.number("controller.entropy_coef", low=0)
    keys.number("controller.ppo.clip", above=0, below=1)


def _optimiser(keys: Keys, stage: str) -> None:
    """The stage's crop size, the decoder's Adam, gradient clipping and Polyak decay."""
    keys.integer(f"{stage}.crop_size", null=True)
    keys.number(f"{stage}.decoder_lr", above=0)
    keys.number(f"{stage}.decoder_weight_decay", low=0)
    keys.number(f"{stage}.grad_clip", above=0)
    keys.number(f"{stage}.polyak", low=0, below=1, null=True)
    keys.integer(f"{stage}.polyak_reference_steps", null=True)


def _scale_range(keys: Keys) -> None:
    value = keys.raw("scale_range")
    if value is not None and not (isinstance(value, (list, ListConfig)) and len(value) == 2
                                  and all(is_number(v) for v in value) and 0 < value[0] <= value[1]):
        keys.fail("scale_range", "null (data.scale_range) or [low, high] with 0 < low <= high")


def _omit_classes(cfg: DictConfig, keys: Keys) -> None:
    """Class ids below ``data.num_classes`` (where the data says how many; depth ignores the key)."""
    value = keys.raw("reward.omit_classes")
    classes = Keys(cfg).raw("data.num_classes")
    if not isinstance(value, (list, ListConfig)) or len(set(value)) != len(value) or not all(
        is_int(c) and c >= 0 and (not is_int(classes) or c < classes) for c in value
    ):
        keys.fail("reward.omit_classes", "a list of distinct class ids"
                  + (f" in [0, {classes})" if is_int(classes) else " >= 0") + ", e.g. [0] or []")


def _early_stopping(keys: Keys) -> None:
    keys.flag("early_stopping.enabled")
    for key in ("initial", "tolerance", "decay"):
        keys.number(f"early_stopping.{key}", low=0, high=1)
    schedule = keys.raw("early_stopping.schedule")
    if not isinstance(schedule, (list, ListConfig)) or not all(
        isinstance(entry, (list, ListConfig)) and len(entry) == 2 and is_int(entry[0]) and entry[0] >= 0
        and is_number(entry[1]) and 0 < entry[1] <= 1 for entry in schedule
    ):
        keys.fail("early_stopping.schedule", "a list of [checks, tolerance factor] pairs: an integer >= 0 and "
                                             "a number in (0, 1]")
