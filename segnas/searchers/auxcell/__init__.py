"""``searcher=auxcell``: Fast Dense NAS (Nekrasov et al., CVPR 2019) over the ``auxcell`` space.

Each round the controller samples ``searcher.children_per_round`` decoders from one state; each
child trains in two stages (decoder on cached frozen-encoder features with auxiliary heads and
optional distillation, then end to end for the children progressive early stopping lets
through), their held-out rewards update the controller in child order, and their rows join
``search.csv``. The best ``top_k`` children come back with the final width and separable
repeats for the pipeline to retrain from scratch. Children train on ``searcher.device``
(``auto``: this process's CUDA device when there is one).

Under ``trainer=ddp`` the ranks join one process group before the search
(:func:`~segnas.searchers.distributed.join_ranks`); a round has one child per rank by default,
each rank trains its own (:func:`.trial.run_round`), results are all-gathered, and every rank
makes the same controller update, so all hold the same state; rank 0 writes the files. A run
with ``children_per_round=W`` in one process samples, trains and learns exactly what ``W`` ranks
do, only one child after another. Under ``trainer=ddp_spawn`` the search runs in the main
process alone.

``task_type=depth`` runs the same search with one output channel: berHu losses (auxiliary heads
included), distillation as MSE to a depth teacher's map, and a reward from δ1 and RMSE
(``searcher.reward.depth_metrics``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from segnas import targets
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.nn import build_backbone
from segnas.report.loggers import is_wandb
from segnas.searchers import Candidate, SearchResult
from segnas.searchers.auxcell import decisions, records
from segnas.searchers.auxcell.child import (
    Objective,
    Stage,
    depth_objective,
    segmentation_objective,
)
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.diagram import draw_cell
from segnas.searchers.auxcell.early_stopping import ProgressiveStopper
from segnas.searchers.auxcell.features import (
    FeatureCache,
    OnTheFly,
    build_cache,
    calibrate_batchnorm,
)
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.splits import SearchData
from segnas.searchers.auxcell.trial import ChildContext, run_round
from segnas.searchers.budget import Budget
from segnas.searchers.checks.auxcell import REWARD_KEYS
from segnas.searchers.distributed import all_gather, from_rank_zero, join_ranks, rank_and_world, search_device
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

log = logging.getLogger(__name__)
SPACE = AuxCellSpace()


def search(cfg: DictConfig, run_dir: Path, resume: Path | None, logger: Logger | None) -> SearchResult:
    """Sample, train and score ``searcher.children`` children; return the ``top_k`` by reward.

    State is saved to ``run_dir/last.ckpt`` after every round, so an interrupted search resumed
    from it samples the same next children the uninterrupted one would have.
    """
    start = time.perf_counter()
    settings = cfg.searcher
    seed = int(cfg.seed)
    join_ranks(cfg.get("trainer"))  # trainer=ddp: every rank searches from here on, together
    rank, world = rank_and_world()
    per_round = _children_per_round(settings, world)
    device = search_device(str(settings.device))
    datamodule = instantiate(cfg.data)
    objective, outputs = _objective(cfg, datamodule)
    data = SearchData.split(datamodule, settings.reward.holdout, settings.reward.holdout_min, seed,
                            settings.reward.get("crop_size"))
    torch.manual_seed(seed)  # the shared encoder's init (pretrained=false) is part of the run's seed
    encoder = _encoder(cfg).to(device).eval()
    teacher = _teacher(settings, outputs)
    if teacher is not None:
        teacher.to(device)
    controller = Controller(decisions.choices(), int(settings.controller.hidden_size), int(settings.controller.num_layers),
                            seed=seed)
    policy = build_policy(str(settings.controller.algorithm), controller, settings.controller, seed=seed)
    stopper = ProgressiveStopper(settings.early_stopping.initial, settings.early_stopping.tolerance,
                                 settings.early_stopping.decay, dict(settings.early_stopping.schedule), seed=seed) \
        if settings.early_stopping.enabled and settings.stage2.enabled else None
    sampler = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    spent = 0.0
    if resume is not None:
        state = records.load_state(resume)
        policy.load_state_dict(state["policy"])
        if stopper is not None and state.get("stopper"):
            stopper.load_state_dict(state["stopper"])
        sampler.set_state(state["sampler"])
        history, spent = list(state["children"]), float(state["wall_time_s"])
        log.info("resumed the auxcell search from %s after %d children", resume, len(history))
        if state.get("children_per_round", 1) != per_round:
            log.warning("resume=%s ran %s children per round, this run %d: the next children differ from what the "
                        "interrupted search would have sampled", resume, state.get("children_per_round", 1), per_round)

    tick = time.perf_counter()
    context = _context(settings, cfg, datamodule, data, encoder, teacher, stopper, seed, objective, outputs)
    cache_s = time.perf_counter() - tick
    labels = {"backbone": str(settings.backbone)}
    search_labels = {**labels, "width": int(settings.width), "sep_repeats": int(settings.sep_repeats)}
    encoder_params = sum(p.numel() for p in encoder.parameters())
    budget, stopped = Budget.from_config(cfg), None
    writer = rank == 0  # every rank holds the same state; one writes it
    while len(history) < int(settings.children):
        # rank 0's clock decides for every rank: they must run the same rounds
        stopped = from_rank_zero(budget.exhausted(spent + time.perf_counter() - start,
                                                  _images_seen(history, settings, cfg))) if history else None
        if stopped:
            log.info("stopping the auxcell search after %d children: %s", len(history), stopped)
            break
        first = len(history)
        round_index = history[-1].get("round", history[-1]["child"]) + 1 if history else 0
        samples = []
        for _ in range(min(per_round, int(settings.children) - first)):
            tick = time.perf_counter()
            actions, log_prob, entropy = policy.sample(sampler)
            samples.append((actions, log_prob, entropy, time.perf_counter() - tick))
        children = [(first + k, SPACE.validate(decisions.to_arch(s[0], **search_labels))) for k, s in enumerate(samples)]
        results = run_round(context, children, rank, world, all_gather)
        for k, ((actions, log_prob, entropy, sample_s), result) in enumerate(zip(samples, results)):
            update = policy.update(actions, log_prob, result["reward"])
            final = SPACE.genotype(decisions.to_arch(actions, **labels))
            record = {
                **result, "child": first + k, "round": round_index, "rank": k % world,
                "genotype_hash": final.hash, "genotype": final.to_dict(),
                "encoding": json.dumps(to_encoding(final.arch)), "cell": describe(final.arch),
                "params": encoder_params + _decoder_params(final, encoder, outputs),
                "controller_update_s": round(update["update_s"], 4), "controller_sample_s": round(sample_s, 4),
                "baseline": update["baseline"], "advantage": update["advantage"], "entropy": entropy,
                "log_prob": log_prob,
            }
            history.append(record)
            log.info(records.describe(record, int(settings.children)))
            if writer:
                _log_child(logger, record)
        if writer:
            records.write_csv(run_dir / "search.csv", history)
            records.save_state(run_dir / "last.ckpt", {
                "policy": policy.state_dict(), "stopper": stopper.state_dict() if stopper else None,
                "sampler": sampler.get_state(), "children": history, "children_per_round": per_round,
                "wall_time_s": spent + time.perf_counter() - start,
            })
    result = _result(run_dir, history, spent + time.perf_counter() - start, cache_s, settings, teacher, cfg,
                     logger if writer else None, writer)
    result.summary.update(budget.summary(stopped), search_children_per_round=per_round, search_ranks=world,
                          search_device=str(device))
    return result


def _children_per_round(settings: DictConfig, world: int) -> int:
    """``searcher.children_per_round`` (null: one per rank); fewer than the ranks would idle some."""
    value = settings.get("children_per_round")
    if value is None:
        return world
    if not isinstance(value, int) or value < world:
        raise ConfigError(f"searcher.children_per_round={value}: expected null (one child per rank) or an integer "
                          f">= the number of ranks ({world})")
    return value


#: Training batches whose mean depth every depth child's output starts at (see training.depth).
_DEPTH_INIT_BATCHES = 8


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


def _objective(cfg: DictConfig, datamodule) -> tuple[Objective, int]:
    """What children learn for ``task_type``, and their decoders' output channels."""
    if targets.task_type(cfg) == targets.DEPTH:
        return depth_objective(), 1
    return segmentation_objective(datamodule.num_classes, datamodule.ignore_index), datamodule.num_classes


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


def _context(settings: DictConfig, cfg: DictConfig, datamodule, data: SearchData, encoder, teacher, stopper,
             seed: int, objective: Objective, outputs: int) -> ChildContext:
    s1, s2 = settings.stage1, settings.stage2
    store = None if s1.cache_device == "auto" else search_device(str(s1.cache_device), "searcher.stage1.cache_device")
    loader = data.train_loader(int(s1.batch_size), seed * 1000 + 1, int(cfg.data.num_workers))
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
                                        key="data.batch_size") if s2.enabled else None,
        stage1=Stage(epochs=int(s1.epochs), batch_size=int(s1.batch_size), decoder_lr=float(s1.decoder_lr),
                     grad_clip=float(s1.grad_clip), polyak=s1.polyak),
        stage2=Stage(epochs=int(s2.epochs), batch_size=datamodule.batch_size, decoder_lr=float(s2.decoder_lr),
                     encoder_lr=float(s2.encoder_lr), encoder_momentum=float(s2.encoder_momentum),
                     encoder_weight_decay=float(s2.encoder_weight_decay), grad_clip=float(s2.grad_clip),
                     polyak=s2.polyak, max_batches=s2.max_batches) if s2.enabled else None,
        stopper=stopper, out_channels=outputs, aux_weight=float(settings.loss.aux_weight),
        aux_cell=bool(settings.loss.aux_cell), kd_weight=float(settings.loss.kd_weight) if teacher is not None else 0.0,
        reward_metrics=_reward_metrics(settings, targets.task_type(cfg)), seed=seed, objective=objective,
        output_bias=mean_depth(loader, _DEPTH_INIT_BATCHES) if objective.target == "depth" else None,
    )


def _decoder_params(genotype: Genotype, encoder: torch.nn.Module, num_classes: int) -> int:
    """Parameters of the decoder the pipeline will retrain (final width and repeats, no aux heads)."""
    decoder = build_decoder(genotype.arch, encoder.feature_info.channels(), num_classes)
    return sum(p.numel() for p in decoder.parameters())


def _images_seen(history: list[dict[str, Any]], settings: DictConfig, cfg: DictConfig) -> int:
    """Training images of every child so far (stage 1 counts cached crops as images)."""
    return (sum(r.get("stage1_steps", 0) for r in history) * int(settings.stage1.batch_size)
            + sum(r.get("stage2_steps", 0) for r in history) * int(cfg.data.batch_size))


def _log_child(logger: Logger | None, record: dict[str, Any]) -> None:
    if logger is None:
        return
    metrics = {f"search/{key}": float(record[key]) for key in ("reward", "baseline", "entropy", "child_s",
                                                                "controller_update_s", "params")
               if record.get(key) is not None}
    metrics["search/failed"] = float(record["status"] != "ok")
    metrics["search/stopped_early"] = float(bool(record.get("stopped_early")))
    logger.log_metrics(metrics, step=int(record["child"]))


def _result(run_dir: Path, history: list[dict[str, Any]], wall_s: float, cache_s: float, settings: DictConfig,
            teacher, cfg: DictConfig, logger: Logger | None, writer: bool = True) -> SearchResult:
    """The ``top_k`` candidates and the summary on every rank; the plots only where ``writer``."""
    plot = records.plot_rewards(run_dir / "reward_curve.png", history) if writer else None
    ranked: dict[str, dict[str, Any]] = {}
    for record in sorted((r for r in history if r["status"] == "ok"), key=lambda r: -r["reward"]):
        ranked.setdefault(record["genotype_hash"], record)
    best = list(ranked.values())[: int(settings.top_k)]
    if not best:
        raise ConfigError(f"searcher=auxcell: all {len(history)} children failed; see search.csv (column error)")
    cell = draw_cell(best[0]["genotype"]["arch"], run_dir / "best_cell.png",
                     f"best child {best[0]['child']} (reward {best[0]['reward']:.4f}): {best[0]['encoding']}") \
        if writer else None
    if is_wandb(logger):
        logger.log_table("search/children", columns=list(records.COLUMNS),
                         data=[[r.get(c) for c in records.COLUMNS] for r in history])
        logger.log_image("search/plots", images=[str(p) for p in (plot, cell) if p is not None])
    candidates = [Candidate(Genotype.from_dict(r["genotype"]), scores={
        "reward": r["reward"], "stage1_reward": r.get("stage1_reward"), "stage2_reward": r.get("stage2_reward"),
        "child": r["child"]}) for r in best]
    updates = [r["controller_update_s"] for r in history]
    return SearchResult(candidates, summary={
        "search_wall_time_s": round(wall_s, 2),
        "search_steps": sum(r.get("stage1_steps", 0) + r.get("stage2_steps", 0) for r in history),
        "search_children": len(history),
        "search_failed": sum(r["status"] != "ok" for r in history),
        "search_stopped_early": sum(bool(r.get("stopped_early")) for r in history),
        "search_images_seen": _images_seen(history, settings, cfg),
        "search_best_reward": best[0]["reward"],
        "search_best_cell": best[0]["cell"],
        "search_encoding": best[0]["encoding"],
        "search_feature_cache_s": round(cache_s, 2),
        "search_controller_update_s_mean": round(sum(updates) / len(updates), 4) if updates else None,
        "search_controller_algorithm": str(settings.controller.algorithm),
        "search_distillation": teacher is not None,
        "search_encoder_weights": cfg.model.backbone_weights or ("pretrained" if cfg.model.pretrained else "random"),
        "search_reward_protocol": (f"held-out train images, shorter side resized to "
                                   f"{settings.reward.get('crop_size') or cfg.data.crop_size} and centre-cropped "
                                   "(labels nearest; the authors' held-out transform)"),
        "search_reward_curve": str(plot) if plot else None,
        "search_best_cell_diagram": str(cell) if cell else None,
    })
