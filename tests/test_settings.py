"""A config that cannot run fails before any expensive work, naming the key and what was expected:
a key of the wrong type or not among its choices when Hydra composes the config against the
schemas (segnas/settings), a value out of range or against another key when the typed settings
are built (``check_config``, before any data is loaded); the CLI prints either as one line with
exit code 2, and the check path imports neither torch, Lightning nor the data stack."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hydra.errors import HydraException

from segnas import pipeline, targets
from segnas.config_checks import PRECISIONS, check_config
from segnas.errors import ConfigError
from segnas.run import composition_error
from tests.conftest import CONFIG_DIR, subprocess_env

MISSING_FILE = "/nonexistent/segnas/model.pt"

#: Per searcher: (overrides, the key the error must name), one mistake in an otherwise valid config.
SEARCHER_CASES: dict[str, list[tuple[list[str], str]]] = {
    "autodeeplab": [
        (["searcher.layers=0"], "searcher.layers"),
        (["searcher.filter_multiplier=0"], "searcher.filter_multiplier"),
        (["searcher.blocks=0"], "searcher.blocks"),
        (["searcher.aspp_channels=0"], "searcher.aspp_channels"),
        (["searcher.epochs=0"], "searcher.epochs"),
        (["searcher.warmup_epochs=6"], "searcher.warmup_epochs"),
        (["searcher.warmup_epochs=-1"], "searcher.warmup_epochs"),
        (["searcher.batches_per_epoch=0"], "searcher.batches_per_epoch"),
        (["searcher.val_images=0"], "searcher.val_images"),
        (["searcher.weight_optimizer.lr=0"], "searcher.weight_optimizer.lr"),
        (["searcher.weight_optimizer._partial_=false"], "searcher.weight_optimizer"),
        (["searcher.weight_min_lr=-1"], "searcher.weight_min_lr"),
        (["searcher.arch_optimizer.lr=-0.1"], "searcher.arch_optimizer.lr"),
        (["searcher.checkpoint_cells=maybe"], "searcher.checkpoint_cells"),
        (["searcher.recompute=sometimes"], "searcher.recompute"),
        (["searcher.channels_last=[1]"], "searcher.channels_last"),
        (["searcher.partial_channels=3"], "searcher.partial_channels"),
        (["searcher.partial_channels=0"], "searcher.partial_channels"),
        (["searcher.network.filter_multiplier=0"], "searcher.network.filter_multiplier"),
        (["searcher.network.aspp_channels=0"], "searcher.network.aspp_channels"),
        (["searcher.network.decoder_channels=0"], "searcher.network.decoder_channels"),
        (["searcher.network.low_level_channels=x"], "searcher.network.low_level_channels"),
        (["+searcher.network.depth=3"], "searcher.network"),
        (["searcher.retrain_epochs=-1", "retrain.epochs=1"], "searcher.retrain_epochs"),
    ],
    "auxcell": [
        (["searcher.task_types=[heights]"], "searcher.task_types"),
        (["searcher.children=0"], "searcher.children"),
        (["searcher.children_per_round=0"], "searcher.children_per_round"),
        (["searcher.device=tpu"], "searcher.device"),
        (["hardware=cpu", "hardware.repeats=0"], "hardware.repeats"),
        (["hardware=onnx_cpu", "hardware.runs=0"], "hardware.runs"),
        (["searcher.top_k=0"], "searcher.top_k"),
        (["searcher.top_k=7"], "searcher.top_k"),
        (["searcher.backbone=''"], "searcher.backbone"),
        ([f"searcher.teacher={MISSING_FILE}"], "searcher.teacher"),
        (["searcher.width=0"], "searcher.width"),
        (["searcher.sep_repeats=0"], "searcher.sep_repeats"),
        (["searcher.calibrate_batches=-1"], "searcher.calibrate_batches"),
        (["searcher.controller.algorithm=a2c"], "searcher.controller.algorithm"),
        (["searcher.controller.hidden_size=0"], "searcher.controller.hidden_size"),
        (["searcher.controller.num_layers=0"], "searcher.controller.num_layers"),
        (["searcher.controller.lr=0"], "searcher.controller.lr"),
        (["searcher.controller.baseline_decay=1.5"], "searcher.controller.baseline_decay"),
        (["searcher.controller.grad_clip=0"], "searcher.controller.grad_clip"),
        (["searcher.controller.entropy_coef=-0.1"], "searcher.controller.entropy_coef"),
        (["searcher.controller.ppo.clip=0"], "searcher.controller.ppo.clip"),
        (["searcher.controller.ppo.buffer_size=0"], "searcher.controller.ppo.buffer_size"),
        (["searcher.controller.ppo.minibatch_size=0"], "searcher.controller.ppo.minibatch_size"),
        (["searcher.controller.ppo.epochs=0"], "searcher.controller.ppo.epochs"),
        (["searcher.controller.positions=all"], "searcher.controller.positions"),
        (["searcher.scale_range=[1.5,0.5]"], "searcher.scale_range"),
        (["searcher.loss.aux_weight=-1"], "searcher.loss.aux_weight"),
        (["searcher.loss.aux_cell=sure"], "searcher.loss.aux_cell"),
        (["searcher.loss.kd_weight=-1"], "searcher.loss.kd_weight"),
        (["searcher.stage1.cache=x"], "searcher.stage1.cache"),
        (["searcher.stage1.cache_device=gpu"], "searcher.stage1.cache_device"),
        (["searcher.stage1.num_crops=0"], "searcher.stage1.num_crops"),
        (["searcher.stage1.epochs=0"], "searcher.stage1.epochs"),
        (["searcher.stage1.batch_size=1"], "searcher.stage1.batch_size"),
        (["searcher.stage1.decoder_lr=0"], "searcher.stage1.decoder_lr"),
        (["searcher.stage1.grad_clip=0"], "searcher.stage1.grad_clip"),
        (["searcher.stage1.polyak=1.0"], "searcher.stage1.polyak"),
        (["searcher.stage1.polyak_reference_steps=0"], "searcher.stage1.polyak_reference_steps"),
        (["searcher.stage1.crop_size=0"], "searcher.stage1.crop_size"),
        (["searcher.stage1.decoder_weight_decay=-1"], "searcher.stage1.decoder_weight_decay"),
        (["searcher.early_stopping.enabled=x"], "searcher.early_stopping.enabled"),
        (["searcher.early_stopping.initial=2"], "searcher.early_stopping.initial"),
        (["searcher.early_stopping.tolerance=-0.1"], "searcher.early_stopping.tolerance"),
        (["searcher.early_stopping.decay=1.5"], "searcher.early_stopping.decay"),
        (["searcher.early_stopping.schedule=[[100,1.5]]"], "searcher.early_stopping.schedule"),
        (["searcher.early_stopping.schedule=[100]"], "searcher.early_stopping.schedule"),
        (["searcher.stage2.enabled=x"], "searcher.stage2.enabled"),
        (["data.batch_size=1"], "data.batch_size"),
        (["searcher.stage2.epochs=0"], "searcher.stage2.epochs"),
        (["searcher.stage2.max_batches=0"], "searcher.stage2.max_batches"),
        (["searcher.stage2.encoder_lr=0"], "searcher.stage2.encoder_lr"),
        (["searcher.stage2.encoder_momentum=1.0"], "searcher.stage2.encoder_momentum"),
        (["searcher.stage2.encoder_weight_decay=-1"], "searcher.stage2.encoder_weight_decay"),
        (["searcher.stage2.decoder_lr=0"], "searcher.stage2.decoder_lr"),
        (["searcher.stage2.grad_clip=0"], "searcher.stage2.grad_clip"),
        (["searcher.stage2.polyak=1.5"], "searcher.stage2.polyak"),
        (["searcher.stage2.polyak_reference_steps=x"], "searcher.stage2.polyak_reference_steps"),
        (["searcher.stage2.crop_size=0"], "searcher.stage2.crop_size"),
        (["searcher.stage2.decoder_weight_decay=-1"], "searcher.stage2.decoder_weight_decay"),
        (["searcher.stage2.loss_resolution=logits"], "searcher.stage2.loss_resolution"),
        (["searcher.reward.metrics=[IoU]"], "searcher.reward.metrics"),
        (["searcher.reward.metrics=[]"], "searcher.reward.metrics"),
        (["searcher.reward.depth_metrics=[RMSE,RMSE]"], "searcher.reward.depth_metrics"),
        (["searcher.reward.holdout=1.0"], "searcher.reward.holdout"),
        (["searcher.reward.holdout_min=-1"], "searcher.reward.holdout_min"),
        (["searcher.reward.holdout=0", "searcher.reward.holdout_min=0"], "searcher.reward.holdout_min"),
        (["searcher.reward.crop_size=0"], "searcher.reward.crop_size"),
        (["searcher.reward.omit_classes=[21]"], "searcher.reward.omit_classes"),
        (["searcher.reward.omit_classes=0"], "searcher.reward.omit_classes"),
        (["searcher.retrain_epochs=-1", "retrain.epochs=1"], "searcher.retrain_epochs"),
    ],
    "fmas": [
        ([f"searcher.supernet={MISSING_FILE}"], "searcher.supernet"),
        (["searcher.supernet_arch=''"], "searcher.supernet_arch"),
        (["searcher.supernet_epochs=0"], "searcher.supernet_epochs"),
        (["searcher.supernet_epochs=-1"], "searcher.supernet_epochs"),
        (["searcher.channel_order=random"], "searcher.channel_order"),
        (["searcher.width_ratios=[1.5]"], "searcher.width_ratios"),
        (["searcher.width_ratios=[]"], "searcher.width_ratios"),
        (["searcher.head_ratios=[0]"], "searcher.head_ratios"),
        (["searcher.min_depth=0"], "searcher.min_depth"),
        (["searcher.val_images=0"], "searcher.val_images"),
        (["searcher.calib_images=0"], "searcher.calib_images"),
        (["searcher.recalibrate_bn=maybe"], "searcher.recalibrate_bn"),
        (["searcher.score_batch_size=0"], "searcher.score_batch_size"),
        (["searcher.device=tpu"], "searcher.device"),
        (["searcher.objectives=[macs,flops]"], "searcher.objectives"),
        (["searcher.objectives=[miou]"], "searcher.objectives"),
        (["searcher.objectives=[miou,macs,macs]"], "searcher.objectives"),
        (["searcher.objectives=[miou,latency]", "~hardware"], "searcher.objectives"),
        (["+searcher.constraints.max_flops=3"], "searcher.constraints"),
        (["searcher.constraints.max_macs=-1"], "searcher.constraints.max_macs"),
        (["searcher.input_size=[32]"], "searcher.input_size"),
        (["searcher.hv_reference=1.0"], "searcher.hv_reference"),
        (["searcher.algorithm=cmaes"], "searcher.algorithm"),
        (["searcher.pop_size=0"], "searcher.pop_size"),
        (["searcher.pop_size=1"], "searcher.pop_size"),
        (["searcher.generations=0"], "searcher.generations"),
        (["searcher.seed=abc"], "searcher.seed"),
        (["searcher.crossover_prob=1.5"], "searcher.crossover_prob"),
        (["searcher.mutation_prob=2"], "searcher.mutation_prob"),
        (["searcher.top_k=0"], "searcher.top_k"),
        (["searcher.top_k=13"], "searcher.top_k"),
        (["searcher.retrain_epochs=-1", "retrain.epochs=1"], "searcher.retrain_epochs"),
    ],
    "random": [
        (["searcher.space=nasnet"], "searcher.space"),
        (["searcher.samples=0"], "searcher.samples"),
        (["searcher.top_k=5"], "searcher.top_k"),
        (["searcher.retrain_epochs=-1", "retrain.epochs=1"], "searcher.retrain_epochs"),
        (["searcher.autodeeplab.warmup_epochs=6"], "searcher.autodeeplab.warmup_epochs"),
        (["searcher.space=auxcell", "searcher.auxcell.children=0"], "searcher.auxcell.children"),
        (["searcher.space=fmas", "searcher.fmas.pop_size=0"], "searcher.fmas.pop_size"),
    ],
}
#: Keys outside the searcher's node, checked for every searcher (here with the default one).
COMMON_CASES: list[tuple[list[str], str]] = [
    (["train.scheduler=step"], "train.scheduler"),
    (["train.poly_power=0"], "train.poly_power"),
    (["train.min_lr=-1"], "train.min_lr"),
    (["train.log_images=-1"], "train.log_images"),
    (["train.optimizer.lr=0"], "train.optimizer.lr"),
    (["trainer.precision=8"], "trainer.precision"),
    (["trainer=ddp", "trainer.accelerator=cpu"], "trainer.sync_batchnorm"),
    (["retrain.epochs=-1"], "retrain.epochs"),
    (["retrain.selection=test"], "retrain.selection"),
    (["retrain.holdout=1.0"], "retrain.holdout"),
    (["budget.images=-3"], "budget.images"),
    (["budget.wall_time_s=0"], "budget.wall_time_s"),
]
CASES = [(name, overrides, key) for name, cases in SEARCHER_CASES.items() for overrides, key in cases] + [
    ("autodeeplab", overrides, key) for overrides, key in COMMON_CASES
]


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading any data fails the test: the checks must answer before it."""
    from segnas.data.datamodule import SegmentationDataModule

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(SegmentationDataModule, "setup", refuse)
    monkeypatch.setattr(SegmentationDataModule, "source", refuse)


def refusal(make_cfg, *overrides: str) -> str:
    """The one line a bad config is refused with: from composing it (a type, a choice, an unknown
    key) or from the run's first step, checking it (a range, a rule between keys)."""
    try:
        cfg = make_cfg(*overrides, tiny=False)
    except HydraException as err:
        return composition_error(err)
    with pytest.raises(ConfigError) as error:
        pipeline.run(cfg)
    return str(error.value)


#: What a refusal says was expected: the settings' rules, or omegaconf's type, choice and struct checks.
EXPECTED = re.compile(
    r"expected|could not be converted|not in '|Invalid value|is not a valid|is not a subclass|incompatible"
    r"|not a ListConfig"
)


@pytest.mark.parametrize(
    ("searcher", "overrides", "key"),
    CASES,
    ids=lambda value: ",".join(value) if isinstance(value, list) else str(value),
)
def test_a_bad_key_names_itself_before_any_data_is_loaded(
    make_cfg, no_data, tmp_path: Path, searcher: str, overrides: list[str], key: str
) -> None:
    message = refusal(make_cfg, "task=search", f"searcher={searcher}", *overrides)
    assert re.match(rf"^{re.escape(key)}[=:.\[ ]", message), message
    assert EXPECTED.search(message), message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["searcher=autodeeplab"],
        ["searcher=auxcell"],
        ["searcher=fmas"],
        ["searcher=random"],
        ["searcher=random", "searcher.space=auxcell"],
        # uniform proposals need no second parent: one per generation is a valid random baseline
        ["searcher=random", "searcher.space=fmas", "searcher.fmas.pop_size=1", "searcher.fmas.top_k=1"],
    ],
)
def test_the_shipped_searcher_settings_pass(make_cfg, overrides: list[str]) -> None:
    check_config(make_cfg("task=search", *overrides, tiny=False))


def test_a_given_supernet_needs_no_training_epochs(make_cfg, tmp_path: Path) -> None:
    supernet = tmp_path / "model.pt"
    supernet.touch()
    check_config(
        make_cfg(
            "task=search", "searcher=fmas", "searcher.supernet_epochs=0", f"searcher.supernet={supernet}", tiny=False
        )
    )


def test_eval_split_is_checked_when_the_config_is_composed(make_cfg) -> None:
    assert (
        refusal(make_cfg, "task=eval", "checkpoint=x.ckpt", "eval.split=test")
        == "eval.split=test: Invalid value 'test', expected one of [val, train]"
    )


def test_a_comparison_checks_every_run_before_the_first_starts(tmp_path: Path, no_data) -> None:
    from tests.conftest import compose_config

    cfg = compose_config(
        "task=compare",
        f"run_dir={tmp_path / 'run'}",
        "compare.seeds=[0]",
        'compare.overrides.fmas=["searcher.pop_size=0"]',
    )
    with pytest.raises(ConfigError, match=r"^searcher\.pop_size=0"):
        pipeline.run(cfg)  # fmas is the third searcher: autodeeplab and auxcell would have run first
    assert not (tmp_path / "run" / "runs").exists()


def test_the_names_the_checks_list_are_what_the_code_computes() -> None:
    """The checks keep their own copy of some names so as not to import torch; these must agree."""
    import torch
    from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT

    from segnas.metrics import DepthMetrics, scores_from_confusion
    from segnas.searchers.autodeeplab.settings import NetworkSettings
    from segnas.spaces.autodeeplab import AutoDeepLabSpace

    def flatten(hint) -> set:
        return {leaf for arg in typing.get_args(hint) for leaf in (flatten(arg) or {arg})}

    assert set(PRECISIONS) == flatten(_PRECISION_INPUT)
    assert set(targets.SCORES[targets.SEGMENTATION]) == set(scores_from_confusion(torch.eye(2)))
    depth = DepthMetrics()
    depth.update(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert set(targets.SCORES[targets.DEPTH]) == set(depth.compute())
    labels = {field.name for field in dataclasses.fields(NetworkSettings)}
    assert labels == set(AutoDeepLabSpace.defaults) - {"cell", "path"}


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300
    )


def test_the_cli_reports_a_bad_key_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "-m", "segnas.run", "searcher=fmas", "searcher.pop_size=1", f"hydra.run.dir={tmp_path}/run"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        "segnas: error: searcher.pop_size=1: expected an integer >= 2 (NSGA-II needs two parents)"
    ]
    assert not (tmp_path / "run" / "supernet").exists()


def test_the_check_path_imports_no_heavy_library(tmp_path: Path) -> None:
    """What ``python -m segnas.run`` imports before it reports a bad key: no Lightning, timm,
    W&B, ONNX, pymoo, data stack or plotting (torch neither, as it happens)."""
    result = run_cli(
        tmp_path,
        "-X",
        "importtime",
        "-m",
        "segnas.run",
        "searcher=fmas",
        "searcher.pop_size=0",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 2 and "segnas: error: searcher.pop_size=0" in result.stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "omegaconf" in imported and "segnas" in imported
    heavy = {
        "pytorch_lightning",
        "lightning",
        "lightning_fabric",
        "timm",
        "wandb",
        "onnx",
        "onnxruntime",
        "pymoo",
        "albumentations",
        "cv2",
        "matplotlib",
        "torchmetrics",
        "torch",
    }
    assert imported.isdisjoint(heavy), sorted(imported & heavy)


@pytest.mark.parametrize(
    ("override", "key"),
    [("replay.workers=0", "replay.workers"), ("replay.seeds=0", "replay.seeds"), ("replay.level=1.5", "replay.level")],
)
def test_a_bad_replay_key_names_itself(make_cfg, tmp_path: Path, override: str, key: str) -> None:
    table = tmp_path / "table"
    table.mkdir()
    cfg = make_cfg("task=replay", "searcher=auxcell", f"replay.table={table}", override, tiny=False)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}[=: ]"):
        check_config(cfg)


#: One wrongly typed value and one value not among its choices per group with a schema, refused
#: by Hydra while it composes the config (before segnas's own code runs).
COMPOSE_CASES: list[tuple[list[str], str, str]] = [
    (["task=dance"], "task", "Invalid value 'dance', expected one of [search, train"),
    (["task_type=heights"], "task_type", "Invalid value 'heights'"),
    (["seed=abc"], "seed", "could not be converted to Integer"),
    (["train.scheduler=step"], "train.scheduler", "expected one of [poly, cosine, constant]"),
    (["train.poly_power=fast"], "train.poly_power", "could not be converted to Float"),
    (["retrain.selection=test"], "retrain.selection", "expected one of [holdout, val]"),
    (["retrain.epochs=many"], "retrain.epochs", "could not be converted to Integer"),
    (["eval.mode=sideways"], "eval.mode", "expected one of [whole, slide, auto]"),
    (["budget.images=lots"], "budget.images", "could not be converted to Integer"),
    (["model.pretrained=perhaps"], "model.pretrained", "is not a valid bool"),
    (["profile.input_size=[a,b]"], "profile.input_size", "could not be converted to Integer"),
    *[
        ([f"data={name}", "data.crop_size=big"], "data.crop_size", "could not be converted to Integer")
        for name in ("synthetic", "voc", "cityscapes", "ade20k", "folder", "nyu_depth")
    ],
    (["data.cache=often"], "data.cache", "is not a valid bool"),
    (["data=cityscapes", "data.image_scale=half"], "data.image_scale", "could not be converted to Float"),
    *[
        ([f"hardware={name}", "hardware.threads=two"], "hardware.threads", "could not be converted to Integer")
        for name in ("cpu", "gpu", "onnx_cpu", "onnx_cpu_int8", "gap8")
    ],
    (["hardware=gap8", "hardware.cores=eight"], "hardware.cores", "could not be converted to Integer"),
    (["searcher=autodeeplab", "searcher.layers=x"], "searcher.layers", "could not be converted to Integer"),
    (
        ["searcher=auxcell", "searcher.controller.algorithm=a2c"],
        "searcher.controller.algorithm",
        "expected one of [ppo, reinforce, uniform]",
    ),
    (["searcher=fmas", "searcher.channel_order=random"], "searcher.channel_order", "expected one of [first, l1]"),
    (["searcher=random", "searcher.space=nasnet"], "searcher.space", "expected one of [autodeeplab, auxcell, fmas]"),
    (
        ["searcher=random", "searcher.space=fmas", "searcher.fmas.pop_size=x"],
        "searcher.fmas.pop_size",
        "could not be converted to Integer",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "key", "reason"), COMPOSE_CASES, ids=lambda v: ",".join(v) if isinstance(v, list) else None
)
def test_a_wrongly_typed_key_fails_when_hydra_composes(make_cfg, overrides: list[str], key: str, reason: str) -> None:
    with pytest.raises(HydraException) as error:
        make_cfg("task=search", *overrides, tiny=False)
    message = composition_error(error.value)
    assert re.match(rf"^{re.escape(key)}(\[\d+\])?=", message), message
    assert reason in message, message


#: One value out of range per group, refused when the typed settings are built (the dataclasses'
#: ``__post_init__``), before any data is loaded.
RANGE_CASES: list[tuple[list[str], str]] = [
    (["train.warmup_fraction=1.0"], "train.warmup_fraction=1.0: expected a value in [0, 1)"),
    (["eval.scale=0"], "eval.scale=0.0: expected a number > 0"),
    (["eval.window=[32]"], "eval.window=[32]: expected null, a positive integer or [h, w]"),
    (["profile.input_size=[0,4]"], "profile.input_size=[0, 4]: expected [H, W], two positive integers"),
    (["data.num_classes=1"], "data.num_classes=1: expected an integer >= 2"),
    (
        ["data=voc", "data.scale_range=[2.0,0.5]"],
        "data.scale_range=[2.0, 0.5]: expected [low, high] with 0 < low <= high",
    ),
    (
        ["data=nyu_depth", "task_type=depth", "searcher=auxcell", "data.image_scale=5"],
        "data.image_scale=5.0: expected a value in (0, 4]",
    ),
    (["data.num_workers=-1"], "data.num_workers=-1: expected an integer >= 0"),
    (["hardware=cpu", "hardware.runs=0"], "hardware.runs=0: expected a positive integer"),
    (["hardware=onnx_cpu", "hardware.warmup=-1"], "hardware.warmup=-1: expected an integer >= 0"),
    (["hardware=gap8", "hardware.l1_usable=1.5"], "hardware.l1_usable=1.5: expected a value in (0, 1]"),
    (["hardware=gpu", "hardware.device=tpu"], "hardware.device=tpu: expected auto, cpu or cuda[:N]"),
    (
        ["searcher=autodeeplab", "searcher.warmup_epochs=6"],
        "searcher.warmup_epochs=6: expected a value in [0, 5] (below epochs=6, or no architecture step would run)",
    ),
    (["searcher=auxcell", "searcher.top_k=7"], "searcher.top_k=7: expected a value in [1, 6] (at most children=6)"),
    (
        ["searcher=fmas", "searcher.pop_size=1"],
        "searcher.pop_size=1: expected an integer >= 2 (NSGA-II needs two parents)",
    ),
    (["searcher=random", "searcher.samples=0"], "searcher.samples=0: expected a positive integer"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), RANGE_CASES, ids=lambda v: ",".join(v) if isinstance(v, list) else None
)
def test_a_value_out_of_range_fails_when_the_settings_are_built(
    make_cfg, no_data, overrides: list[str], message: str
) -> None:
    cfg = make_cfg("task=search", *overrides, tiny=False)  # composes: the types are right
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert str(error.value) == message


def test_every_shipped_yaml_sets_exactly_its_schemas_keys() -> None:
    """The YAML files stay the defaults users read: every key of a schema is in its file (no default
    applies unseen) and every key of the file is in its schema."""
    import yaml

    from segnas.searchers.registry import SEARCHERS
    from segnas.settings import schema

    conf = Path(CONFIG_DIR)
    files = [
        (conf / "data" / f"{name}.yaml", cls)
        for name, cls in ((name, cls) for target, (name, cls) in schema.DATA.items())
    ]
    files += [
        (conf / "hardware" / f"{name}.yaml", schema.HARDWARE[target][1])
        for name, target in (
            ("cpu", "segnas.hardware.latency.TorchLatency"),
            ("gpu", "segnas.hardware.latency.TorchLatency"),
            ("onnx_cpu", "segnas.hardware.latency.OnnxRuntimeLatency"),
            ("onnx_cpu_int8", "segnas.quantize.latency.OnnxRuntimeInt8Latency"),
            ("gap8", "segnas.hardware.gap8.Gap8Latency"),
        )
    ]
    files += [(conf / "searcher" / f"{name}.yaml", entry.settings) for name, entry in SEARCHERS.items()]
    for path, cls in files:
        keys = set(yaml.safe_load(path.read_text())) - {"defaults"}
        fields = {f.name for f in dataclasses.fields(cls)}
        if cls.__name__ == "RandomSettings":
            keys |= {"autodeeplab", "auxcell", "fmas"}  # composed there by its defaults list
        assert keys == fields, (path.name, sorted(keys ^ fields))


def test_the_cli_reports_a_composition_error_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        "-m",
        "segnas.run",
        "searcher=auxcell",
        "searcher.controller.algorithm=a2c",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        "segnas: error: searcher.controller.algorithm=a2c: Invalid value 'a2c', expected one of "
        "[ppo, reinforce, uniform]"
    ]
    assert not (tmp_path / "run").exists()


def test_fmas_random_proposals_point_at_the_random_baseline(make_cfg) -> None:
    """One route to FMAS's random baseline: searcher=random searcher.space=fmas."""
    assert refusal(make_cfg, "task=search", "searcher=fmas", "searcher.algorithm=random") == (
        "searcher.algorithm=random: expected nsga2: FMAS's random baseline (uniform proposals at FMAS's budget) "
        "is searcher=random searcher.space=fmas"
    )
