"""The auxiliary-cell search as a LightningModule: one ``training_step`` is one round.

A round is ``children_per_round`` decoders sampled from one controller state; this rank trains
its share of them with the two-stage child code (:func:`.trial.run_round`: no Trainer per child,
which would leak over thousands of children), the stage-1 rewards and the results are gathered
across ranks, and the PPO / REINFORCE update runs identically on every rank, in child order (the
engine checks after every round that the ranks' controllers are bitwise equal).
Controller, optimiser, baseline, PPO buffer, early-stopping state, sampler and every child's
record travel in the Lightning checkpoint, so ``resume=`` (``ckpt_path``) continues with the
same next sample.

The controller lives in the policy and the children's networks in the round code: none is a
registered child of this module, so neither DDP nor the BatchNorm layer sync sees them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas import targets
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.nn import build_backbone
from segnas.searchers.auxcell import decisions, records
from segnas.searchers.auxcell.child import Objective, Stage, depth_objective, segmentation_objective
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.early_stopping import ProgressiveStopper
from segnas.searchers.auxcell.features import FeatureCache, OnTheFly, build_cache, calibrate_batchnorm
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.splits import SearchData
from segnas.searchers.auxcell.trial import ChildContext, run_round
from segnas.searchers.checks.auxcell import REWARD_KEYS
from segnas.searchers.distributed import all_gather, rank_and_world, search_device
from segnas.searchers.engine import SearchModule
from segnas.spaces.auxcell import (
    ENCODER_OUT_INDICES,
    ENCODER_STRIDE,
    AuxCellSpace,
    build_decoder,
    describe,
    to_encoding,
)
from segnas.training import load_network
from segnas.training.depth import mean_depth
from segnas.training.spawned import own_tensors_of

log = logging.getLogger(__name__)
SPACE = AuxCellSpace()
#: Training batches whose mean depth every depth child's output starts at (see training.depth).
_DEPTH_INIT_BATCHES = 8


def children_per_round(settings: DictConfig, world: int) -> int:
    """``searcher.children_per_round`` (null: one per rank); fewer than the ranks would idle some."""
    value = settings.get("children_per_round")
    if value is None:
        return world
    if not isinstance(value, int) or value < world:
        raise ConfigError(f"searcher.children_per_round={value}: expected null (one child per rank) or an integer "
                          f">= the number of ranks ({world})")
    return value


class AuxCellSearchModule(SearchModule):
    """``searcher.children`` children in rounds of :func:`children_per_round`.

    ``cfg`` is the run's config (data, model weights, searcher); the data, the encoder, its feature
    cache and the teacher are built in :meth:`setup`, on the device the Trainer gives this rank.
    """

    unit_name = "round"

    def __init__(self, cfg: DictConfig, world: int, started_at: float | None = None) -> None:
        settings = cfg.searcher
        per_round = children_per_round(settings, world)
        super().__init__(units=math.ceil(int(settings.children) / per_round))
        self.start_clock(started_at)
        self.cfg, self.settings, self.per_round = cfg, settings, per_round
        self.seed = int(cfg.seed)
        controller = Controller(decisions.choices(str(settings.controller.positions)),
                                int(settings.controller.hidden_size), int(settings.controller.num_layers), seed=self.seed)
        self.policy = build_policy(str(settings.controller.algorithm), controller, settings.controller, seed=self.seed)
        self.stopper = ProgressiveStopper(settings.early_stopping.initial, settings.early_stopping.tolerance,
                                          settings.early_stopping.decay, dict(settings.early_stopping.schedule),
                                          seed=self.seed) \
            if settings.early_stopping.enabled and settings.stage2.enabled else None
        self.sampler = torch.Generator().manual_seed(self.seed)
        self.history: list[dict[str, Any]] = []
        self.context: ChildContext | None = None
        self.cache_s = 0.0
        self.encoder_params = 0
        self.device_name = str(settings.device)

    # the search's state ------------------------------------------------------------------------

    def search_state(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "stopper": self.stopper.state_dict() if self.stopper else None,
                "sampler": self.sampler.get_state(), "children": self.history, "children_per_round": self.per_round}

    def load_search_state(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.stopper is not None and state.get("stopper"):
            self.stopper.load_state_dict(state["stopper"])
        self.sampler.set_state(state["sampler"])
        self.history = list(state["children"])
        if state.get("children_per_round", 1) != self.per_round:
            log.warning("the resumed search ran %s children per round, this run %d: the next children differ from "
                        "what the interrupted search would have sampled", state.get("children_per_round", 1),
                        self.per_round)

    def replicated_state(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "stopper": self.stopper.state_dict() if self.stopper else None,
                "sampler": self.sampler.get_state()}

    def record_files(self) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
        return {"search.csv": (records.COLUMNS, self.history)}

    def best_score(self) -> float | None:
        """The best reward of a child that was scored (a failed child's is the failure's)."""
        return max((r["reward"] for r in self.history if r["status"] != "failed"), default=None)

    def unit_line(self) -> str:
        done = [r for r in self.history if r["status"] == "ok"]
        best = max((r["reward"] for r in done), default=0.0)
        return (f"round {self.current_epoch + 1}/{self.units}: {len(self.history)}/{self.settings.children} children, "
                f"best reward {best:.4f}, baseline {self.history[-1]['baseline']:.4f}, {self.wall_time_s:.1f} s")

    # building ----------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """The children's shared parts, built once per process on this rank's device."""
        if self.context is not None:
            return
        own_tensors_of(self.policy.controller)  # a spawned rank's controller is its own
        tick = time.perf_counter()
        cfg, settings = self.cfg, self.settings
        device = self.trainer.strategy.root_device if settings.device == "auto" else search_device(str(settings.device))
        self.device_name = str(device)
        datamodule = instantiate(cfg.data)
        objective, outputs = _objective(cfg, datamodule)
        data = SearchData.split(datamodule, settings.reward.holdout, settings.reward.holdout_min, self.seed,
                                settings.reward.get("crop_size"), settings.get("scale_range"))
        torch.manual_seed(self.seed)  # the shared encoder's init (pretrained=false) is part of the run's seed
        encoder = _encoder(cfg).to(device).eval()
        teacher = _teacher(settings, outputs)
        if teacher is not None:
            teacher.to(device)
        self.outputs = outputs
        self.encoder_params = sum(p.numel() for p in encoder.parameters())
        self.context = _context(settings, cfg, datamodule, data, encoder, teacher, self.stopper, self.seed,
                                objective, outputs)
        self.cache_s = time.perf_counter() - tick

    def _images(self) -> int:
        return images_seen(self.history, self.settings, self.cfg)

    # one round ---------------------------------------------------------------------------------

    def run_unit(self, index: int) -> None:
        assert self.context is not None
        rank, world = rank_and_world()
        settings = self.settings
        labels = {"backbone": str(settings.backbone)}
        search_labels = {**labels, "width": int(settings.width), "sep_repeats": int(settings.sep_repeats)}
        first = len(self.history)
        samples = []
        for _ in range(min(self.per_round, int(settings.children) - first)):
            tick = time.perf_counter()
            actions, log_prob, entropy = self.policy.sample(self.sampler)
            samples.append((actions, log_prob, entropy, time.perf_counter() - tick))
        children = [(first + k, SPACE.validate(decisions.to_arch(s[0], **search_labels))) for k, s in enumerate(samples)]
        results = run_round(self.context, children, rank, world, all_gather)
        for k, ((actions, log_prob, entropy, sample_s), result) in enumerate(zip(samples, results)):
            update = self.policy.update(actions, log_prob, result["reward"])
            final = SPACE.genotype(decisions.to_arch(actions, **labels))
            record = {
                **result, "child": first + k, "round": index, "rank": k % world,
                "genotype_hash": final.hash, "genotype": final.to_dict(),
                "encoding": json.dumps(to_encoding(final.arch)), "cell": describe(final.arch),
                "params": self.encoder_params + _decoder_params(final, self.context.encoder, self.outputs),
                "controller_update_s": round(update["update_s"], 4), "controller_sample_s": round(sample_s, 4),
                "baseline": update["baseline"], "advantage": update["advantage"], "entropy": entropy,
                "log_prob": log_prob,
            }
            self.history.append(record)
            log.info(records.describe(record, int(settings.children)))
            if rank == 0 and self.logger is not None:
                self.logger.log_metrics(_child_metrics(record), step=int(record["child"]))
        self.images_seen = self._images()


def images_seen(history: list[dict[str, Any]], settings: DictConfig, cfg: DictConfig) -> int:
    """Training images of every child so far (stage 1 counts cached crops as images)."""
    return (sum(r.get("stage1_steps", 0) for r in history) * int(settings.stage1.batch_size)
            + sum(r.get("stage2_steps", 0) for r in history) * int(cfg.data.batch_size))


def _child_metrics(record: dict[str, Any]) -> dict[str, float]:
    metrics = {f"search/{key}": float(record[key]) for key in ("reward", "baseline", "entropy", "child_s",
                                                                "controller_update_s", "params")
               if record.get(key) is not None}
    metrics["search/failed"] = float(record["status"] != "ok")
    metrics["search/stopped_early"] = float(bool(record.get("stopped_early")))
    return metrics


def _reward_metrics(settings: DictConfig, kind: str) -> tuple[str, ...]:
    return tuple(settings.reward.get(REWARD_KEYS[kind]) or ())


def _encoder(cfg: DictConfig) -> torch.nn.Module:
    """The encoder every child starts from; without weights the search ranks decoders on random
    features, which says little about how they would do on a trained encoder."""
    weights = cfg.model.backbone_weights
    if not cfg.model.pretrained and weights is None:
        log.warning("model.pretrained=false and model.backbone_weights=null: the auxcell search runs on a randomly "
                    "initialised encoder; set model.backbone_weights to a local file (or model.pretrained=true)")
    return build_backbone(str(cfg.searcher.backbone), output_stride=ENCODER_STRIDE, pretrained=bool(cfg.model.pretrained),
                          weights=weights, out_indices=ENCODER_OUT_INDICES)


def _objective(cfg: DictConfig, datamodule: Any) -> tuple[Objective, int]:
    """What children learn for ``task_type``, and their decoders' output channels; the reward of
    segmentation leaves ``searcher.reward.omit_classes`` out of its class means."""
    if targets.task_type(cfg) == targets.DEPTH:
        return depth_objective(), 1
    omit = tuple(cfg.searcher.reward.omit_classes)
    return segmentation_objective(datamodule.num_classes, datamodule.ignore_index, omit), datamodule.num_classes


def _teacher(settings: DictConfig, num_classes: int) -> torch.nn.Module | None:
    """The distillation teacher; ``num_classes`` is the output channels it must have (1: depth)."""
    if settings.teacher in (None, ""):
        if float(settings.loss.kd_weight) > 0:
            log.info("searcher.teacher is not set: knowledge distillation is off (give a task=train checkpoint to use it)")
        return None
    _, classes, teacher = load_network(settings.teacher)
    if classes != num_classes:
        raise ConfigError(f"searcher.teacher={settings.teacher} has {classes} output channels, the task needs "
                          f"{num_classes} (the class count, or 1 for task_type=depth)")
    return teacher.eval()


def _context(settings: DictConfig, cfg: DictConfig, datamodule: Any, data: SearchData, encoder: torch.nn.Module,
             teacher: torch.nn.Module | None, stopper: ProgressiveStopper | None, seed: int, objective: Objective,
             outputs: int) -> ChildContext:
    s1, s2 = settings.stage1, settings.stage2
    store = None if s1.cache_device == "auto" else search_device(str(s1.cache_device), "searcher.stage1.cache_device")
    loader = data.train_loader(int(s1.batch_size), seed * 1000 + 1, int(cfg.data.num_workers), crop_size=s1.crop_size)
    if not cfg.model.pretrained and cfg.model.backbone_weights is None and settings.calibrate_batches:
        used = calibrate_batchnorm(encoder, loader, int(settings.calibrate_batches))
        log.info("random encoder: BatchNorm statistics set from %d training batches (searcher.calibrate_batches)", used)
    stage1_data: FeatureCache | OnTheFly
    if s1.cache:
        stage1_data = build_cache(encoder, loader, int(s1.num_crops), teacher, target=objective.target, store=store)
    else:
        stage1_data = OnTheFly(encoder, loader, int(s1.num_crops), teacher, target=objective.target)
    holdout_loader = datamodule.loader(data.holdout, train=False)
    return ChildContext(
        encoder=encoder, stage1_data=stage1_data,
        holdout_features=build_cache(encoder, holdout_loader, len(data.holdout), None, label_stride=False,
                                     target=objective.target, store=store),
        holdout_loader=holdout_loader,
        stage2_loader=data.train_loader(datamodule.batch_size, seed * 1000 + 2, int(cfg.data.num_workers),
                                        key="data.batch_size", crop_size=s2.crop_size) if s2.enabled else None,
        stage1=_stage(s1, int(s1.batch_size)),
        stage2=_stage(s2, datamodule.batch_size) if s2.enabled else None,
        stopper=stopper, out_channels=outputs, aux_weight=float(settings.loss.aux_weight),
        aux_cell=bool(settings.loss.aux_cell), kd_weight=float(settings.loss.kd_weight) if teacher is not None else 0.0,
        reward_metrics=_reward_metrics(settings, targets.task_type(cfg)), seed=seed, objective=objective,
        output_bias=mean_depth(loader, _DEPTH_INIT_BATCHES) if objective.target == "depth" else None,
    )


def _stage(section: DictConfig, batch_size: int) -> Stage:
    """A stage's training settings from ``searcher.stage1`` / ``stage2``: the keys :class:`Stage`
    has (the encoder's are only in stage 2; the others keep Stage's unused defaults)."""
    names = {field.name for field in dataclasses.fields(Stage)} - {"batch_size"}
    return Stage(batch_size=int(batch_size), **{name: section[name] for name in names if name in section})


def _decoder_params(genotype: Genotype, encoder: torch.nn.Module, num_classes: int) -> int:
    """Parameters of the decoder the pipeline will retrain (final width and repeats, no aux heads)."""
    decoder = build_decoder(genotype.arch, encoder.feature_info.channels(), num_classes)
    return sum(p.numel() for p in decoder.parameters())


