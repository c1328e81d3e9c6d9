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

from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.nn import build_backbone
from segnas.searchers.auxcell import decisions, records
from segnas.searchers.auxcell.child import Objective, Stage, depth_objective, segmentation_objective
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.early_stopping import ProgressiveStopper
from segnas.searchers.auxcell.features import FeatureCache, OnTheFly, build_cache, calibrate_batchnorm
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.records import ChildRecord
from segnas.searchers.auxcell.settings import AuxCellSettings, RewardSettings, StageSettings
from segnas.searchers.auxcell.splits import SearchData
from segnas.searchers.auxcell.trial import ChildContext, run_round
from segnas.searchers.contract import SearchContext
from segnas.searchers.distributed import all_gather, rank_and_world, search_device
from segnas.searchers.engine import SearchModule
from segnas.settings.run import TaskType
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


def children_per_round(settings: AuxCellSettings, world: int) -> int:
    """``searcher.children_per_round`` (null: one per rank); fewer than the ranks would idle some."""
    value = settings.children_per_round
    if value is None:
        return world
    if value < world:
        raise ConfigError(
            f"searcher.children_per_round={value}: expected null (one child per rank) or an integer "
            f">= the number of ranks ({world})"
        )
    return value


class AuxCellSearchModule(SearchModule):
    """``settings.children`` children in rounds of :func:`children_per_round`.

    Of the run it keeps what the children need (``context``'s data module, seed, task type and
    encoder weights), not the context itself: the module is pickled into ``ddp_spawn`` ranks.
    The data split, the encoder, its feature cache and the teacher are built in :meth:`setup`,
    on the device the Trainer gives this rank.
    """

    unit_name = "round"

    def __init__(
        self, settings: AuxCellSettings, context: SearchContext, world: int, started_at: float | None = None
    ) -> None:
        per_round = children_per_round(settings, world)
        super().__init__(units=math.ceil(settings.children / per_round))
        self.start_clock(started_at)
        self.settings, self.per_round = settings, per_round
        self.datamodule = context.datamodule
        self.seed, self.task_type = context.seed, context.task_type
        self.pretrained, self.backbone_weights = context.pretrained, context.backbone_weights
        controller = Controller(
            decisions.choices(settings.controller.positions),
            settings.controller.hidden_size,
            settings.controller.num_layers,
            seed=self.seed,
        )
        self.policy = build_policy(settings.controller.algorithm, controller, settings.controller, seed=self.seed)
        stopping = settings.early_stopping
        self.stopper = (
            ProgressiveStopper(
                stopping.initial, stopping.tolerance, stopping.decay, dict(stopping.schedule), seed=self.seed
            )
            if stopping.enabled and settings.stage2.enabled
            else None
        )
        self.sampler = torch.Generator().manual_seed(self.seed)
        self.history: list[ChildRecord] = []
        self.context: ChildContext | None = None
        self.cache_s = 0.0
        self.encoder_params = 0
        self.device_name = settings.device

    # the search's state ------------------------------------------------------------------------

    def search_state(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "stopper": self.stopper.state_dict() if self.stopper else None,
            "sampler": self.sampler.get_state(),
            "children": self.history,
            "children_per_round": self.per_round,
        }

    def load_search_state(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.stopper is not None and state.get("stopper"):
            self.stopper.load_state_dict(state["stopper"])
        self.sampler.set_state(state["sampler"])
        self.history = list(state["children"])
        if state.get("children_per_round", 1) != self.per_round:
            log.warning(
                "the resumed search ran %s children per round, this run %d: the next children differ from "
                "what the interrupted search would have sampled",
                state.get("children_per_round", 1),
                self.per_round,
            )

    def replicated_state(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "stopper": self.stopper.state_dict() if self.stopper else None,
            "sampler": self.sampler.get_state(),
        }

    def record_files(self) -> dict[str, tuple[Any, list[ChildRecord]]]:
        return {"search.csv": (records.COLUMNS, self.history)}

    def best_score(self) -> float | None:
        """The best reward of a child that was scored (a failed child's is the failure's)."""
        return max((r["reward"] for r in self.history if r["status"] != "failed"), default=None)

    def unit_line(self) -> str:
        done = [r for r in self.history if r["status"] == "ok"]
        best = max((r["reward"] for r in done), default=0.0)
        return (
            f"round {self.current_epoch + 1}/{self.units}: {len(self.history)}/{self.settings.children} children, "
            f"best reward {best:.4f}, baseline {self.history[-1]['baseline']:.4f}, {self.wall_time_s:.1f} s"
        )

    # building ----------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """The children's shared parts, built once per process on this rank's device."""
        if self.context is not None:
            return
        own_tensors_of(self.policy.controller)  # a spawned rank's controller is its own
        tick = time.perf_counter()
        settings = self.settings
        device = self.trainer.strategy.root_device if settings.device == "auto" else search_device(settings.device)
        self.device_name = str(device)
        objective, outputs = _objective(self.task_type, settings.reward, self.datamodule)
        data = SearchData.split(
            self.datamodule,
            settings.reward.holdout,
            settings.reward.holdout_min,
            self.seed,
            settings.reward.crop_size,
            settings.scale_range,
        )
        torch.manual_seed(self.seed)  # the shared encoder's init (pretrained=false) is part of the run's seed
        encoder = _encoder(settings.backbone, self.pretrained, self.backbone_weights).to(device).eval()
        teacher = _teacher(settings, outputs)
        if teacher is not None:
            teacher.to(device)
        self.outputs = outputs
        self.encoder_params = sum(p.numel() for p in encoder.parameters())
        self.context = self._child_context(data, encoder, teacher, objective, outputs)
        self.cache_s = time.perf_counter() - tick

    def _child_context(
        self,
        data: SearchData,
        encoder: torch.nn.Module,
        teacher: torch.nn.Module | None,
        objective: Objective,
        outputs: int,
    ) -> ChildContext:
        """What every child shares: the stage-1 features (cached once), the held-out data, the
        stage-2 loader and both stages' settings (stage 2 trains on data.batch_size images)."""
        settings, datamodule, seed = self.settings, self.datamodule, self.seed
        s1, s2 = settings.stage1, settings.stage2
        store = None if s1.cache_device == "auto" else search_device(s1.cache_device, "searcher.stage1.cache_device")
        loader = data.train_loader(s1.batch_size, seed * 1000 + 1, datamodule.num_workers, crop_size=s1.crop_size)
        if not self.pretrained and self.backbone_weights is None and settings.calibrate_batches:
            used = calibrate_batchnorm(encoder, loader, settings.calibrate_batches)
            log.info(
                "random encoder: BatchNorm statistics set from %d training batches (searcher.calibrate_batches)", used
            )
        stage1_data: FeatureCache | OnTheFly
        if s1.cache:
            stage1_data = build_cache(encoder, loader, s1.num_crops, teacher, target=objective.target, store=store)
        else:
            stage1_data = OnTheFly(encoder, loader, s1.num_crops, teacher, target=objective.target)
        holdout_loader = datamodule.loader(data.holdout, train=False)
        return ChildContext(
            encoder=encoder,
            stage1_data=stage1_data,
            holdout_features=build_cache(
                encoder,
                holdout_loader,
                len(data.holdout),
                None,
                label_stride=False,
                target=objective.target,
                store=store,
            ),
            holdout_loader=holdout_loader,
            stage2_loader=data.train_loader(
                datamodule.batch_size,
                seed * 1000 + 2,
                datamodule.num_workers,
                key="data.batch_size",
                crop_size=s2.crop_size,
            )
            if s2.enabled
            else None,
            stage1=_stage(s1, s1.batch_size),
            stage2=_stage(s2, datamodule.batch_size) if s2.enabled else None,
            stopper=self.stopper,
            out_channels=outputs,
            aux_weight=settings.loss.aux_weight,
            aux_cell=settings.loss.aux_cell,
            kd_weight=settings.loss.kd_weight if teacher is not None else 0.0,
            reward_metrics=settings.reward.metrics_for(self.task_type),
            seed=seed,
            objective=objective,
            output_bias=mean_depth(loader, _DEPTH_INIT_BATCHES) if objective.target == "depth" else None,
        )

    def _images(self) -> int:
        return images_seen(self.history, self.settings, self.datamodule.batch_size)

    # one round ---------------------------------------------------------------------------------

    def run_unit(self, index: int) -> None:
        assert self.context is not None
        rank, world = rank_and_world()
        settings = self.settings
        labels = {"backbone": settings.backbone}
        search_labels = {**labels, "width": settings.width, "sep_repeats": settings.sep_repeats}
        first = len(self.history)
        samples = []
        for _ in range(min(self.per_round, settings.children - first)):
            tick = time.perf_counter()
            actions, log_prob, entropy = self.policy.sample(self.sampler)
            samples.append((actions, log_prob, entropy, time.perf_counter() - tick))
        children = [
            (first + k, SPACE.validate(decisions.to_arch(s[0], **search_labels))) for k, s in enumerate(samples)
        ]
        results = run_round(self.context, children, rank, world, all_gather)
        for k, ((actions, log_prob, entropy, sample_s), result) in enumerate(zip(samples, results)):
            update = self.policy.update(actions, log_prob, result["reward"])
            final = SPACE.genotype(decisions.to_arch(actions, **labels))
            record: ChildRecord = {
                **result,
                "child": first + k,
                "round": index,
                "rank": k % world,
                "genotype_hash": final.hash,
                "genotype": final.to_dict(),
                "encoding": json.dumps(to_encoding(final.arch)),
                "cell": describe(final.arch),
                "params": self.encoder_params + _decoder_params(final, self.context.encoder, self.outputs),
                "controller_update_s": round(update["update_s"], 4),
                "controller_sample_s": round(sample_s, 4),
                "baseline": update["baseline"],
                "advantage": update["advantage"],
                "entropy": entropy,
                "log_prob": log_prob,
            }
            self.history.append(record)
            log.info(records.describe(record, settings.children))
            if rank == 0 and self.logger is not None:
                self.logger.log_metrics(_child_metrics(record), step=record["child"])
        self.images_seen = self._images()


def images_seen(history: list[ChildRecord], settings: AuxCellSettings, batch_size: int) -> int:
    """Training images of every child so far (stage 1 counts cached crops as images; stage 2
    trains on ``batch_size``, data.batch_size, images a step)."""
    return (
        sum(r.get("stage1_steps", 0) for r in history) * settings.stage1.batch_size
        + sum(r.get("stage2_steps", 0) for r in history) * batch_size
    )


def _child_metrics(record: ChildRecord) -> dict[str, float]:
    metrics = {
        f"search/{key}": float(record[key])
        for key in ("reward", "baseline", "entropy", "child_s", "controller_update_s", "params")
        if record.get(key) is not None
    }
    metrics["search/failed"] = float(record["status"] != "ok")
    metrics["search/stopped_early"] = float(bool(record.get("stopped_early")))
    return metrics


def _encoder(backbone: str, pretrained: bool, weights: str | None) -> torch.nn.Module:
    """The encoder every child starts from (model.pretrained / model.backbone_weights); without
    weights the search ranks decoders on random features, which says little about how they would
    do on a trained encoder."""
    if not pretrained and weights is None:
        log.warning(
            "model.pretrained=false and model.backbone_weights=null: the auxcell search runs on a randomly "
            "initialised encoder; set model.backbone_weights to a local file (or model.pretrained=true)"
        )
    return build_backbone(
        backbone, output_stride=ENCODER_STRIDE, pretrained=pretrained, weights=weights, out_indices=ENCODER_OUT_INDICES
    )


def _objective(task_type: TaskType, reward: RewardSettings, datamodule: Any) -> tuple[Objective, int]:
    """What children learn for ``task_type``, and their decoders' output channels; the reward of
    segmentation leaves ``reward.omit_classes`` out of its class means."""
    if task_type == TaskType.depth:
        return depth_objective(), 1
    return segmentation_objective(
        datamodule.num_classes, datamodule.ignore_index, reward.omit_classes
    ), datamodule.num_classes


def _teacher(settings: AuxCellSettings, num_classes: int) -> torch.nn.Module | None:
    """The distillation teacher; ``num_classes`` is the output channels it must have (1: depth)."""
    if settings.teacher in (None, ""):
        if settings.loss.kd_weight > 0:
            log.info(
                "searcher.teacher is not set: knowledge distillation is off (give a task=train checkpoint to use it)"
            )
        return None
    _, classes, teacher = load_network(settings.teacher)
    if classes != num_classes:
        raise ConfigError(
            f"searcher.teacher={settings.teacher} has {classes} output channels, the task needs "
            f"{num_classes} (the class count, or 1 for task_type=depth)"
        )
    return teacher.eval()


def _stage(section: StageSettings, batch_size: int) -> Stage:
    """A stage's training settings from ``searcher.stage1`` / ``stage2``: the keys :class:`Stage`
    has (the encoder's are only in stage 2; the others keep Stage's unused defaults)."""
    names = {field.name for field in dataclasses.fields(Stage)} - {"batch_size"}
    return Stage(
        batch_size=batch_size,
        **{field.name: getattr(section, field.name) for field in dataclasses.fields(section) if field.name in names},
    )


def _decoder_params(genotype: Genotype, encoder: torch.nn.Module, num_classes: int) -> int:
    """Parameters of the decoder the pipeline will retrain (final width and repeats, no aux heads)."""
    decoder = build_decoder(genotype.arch, encoder.feature_info.channels(), num_classes)
    return sum(p.numel() for p in decoder.parameters())
