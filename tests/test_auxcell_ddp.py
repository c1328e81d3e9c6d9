"""Children split across 2 CPU processes (gloo) by the Trainer's own strategy (``ddp_spawn``):
each rank trains its own child of every round, rewards are gathered, and every rank makes the
same controller update (the module checks the ranks' controllers are bitwise equal after every
round, and fails otherwise).

The reference is this machine's one-process run with ``children_per_round=2``: the same rounds,
one child after another. Independently of that code path, the controller's samples and final
state are replayed from the recorded rewards, and the early-stopping flags from the recorded
stage-1 rewards.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.early_stopping import ProgressiveStopper
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.settings import Policy
from segnas.searchers.engine import STATE_KEY
from segnas.settings import schema
from tests.conftest import run_search

SETTINGS = [
    "searcher=auxcell",
    "searcher.children=3",
    "searcher.stage1.num_crops=8",
    "searcher.stage1.batch_size=4",
    "searcher.stage1.epochs=2",
    "searcher.stage2.max_batches=1",
    "searcher.reward.holdout_min=4",
    "searcher.controller.ppo.minibatch_size=2",
    # a stricter running average than the paper's start, so some children stop after stage 1
    "searcher.early_stopping.initial=0.3",
    "searcher.early_stopping.decay=0.5",
    # background scored: children this small predict little else, and the paper's reward (background left
    # out) would be 0 for all of them, so the controller would never move
    "searcher.reward.omit_classes=[]",
    # Polyak decay per step: at 2 steps per epoch the scaled decay leaves the trained weights, with which
    # every child this small predicts the majority class, so all rewards would be equal and the controller
    # would have nothing to learn from
    "searcher.stage1.polyak_reference_steps=null",
    "searcher.stage2.polyak_reference_steps=null",
]
SPAWN = ["trainer=ddp_spawn", "trainer.devices=2"]
TIMES = ("stage1_s", "stage2_s", "child_s", "controller_update_s", "controller_sample_s", "rank")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def search_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)[STATE_KEY]["search"]


def same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_ranks_train_different_children_and_update_the_controller_identically(make_cfg, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # the ranks run one thread each: the reference too, for the same kernels
    cfgs = {
        "alone": make_cfg(*SETTINGS, "searcher.children_per_round=2", run_dir=tmp_path / "alone"),
        "ddp": make_cfg(*SETTINGS, *SPAWN, run_dir=tmp_path / "ddp"),
    }
    results = {}
    for name, cfg in cfgs.items():
        (tmp_path / name).mkdir()
        results[name] = run_search(cfg)

    table = rows(tmp_path / "ddp" / "search.csv")
    assert [(int(r["child"]), int(r["round"]), int(r["rank"])) for r in table] == [(0, 0, 0), (1, 0, 1), (2, 1, 0)]
    reference = rows(tmp_path / "alone" / "search.csv")
    assert [int(r["rank"]) for r in reference] == [0, 0, 0] and [int(r["round"]) for r in reference] == [0, 0, 1]
    for mine, theirs in zip(table, reference):
        for key in mine.keys() - set(TIMES):
            assert mine[key] == theirs[key], (key, mine[key], theirs[key])

    # the ranks held the same controller after every round (else the search fails); it is the
    # reference's, and it moved
    ddp, alone = search_state(tmp_path / "ddp"), search_state(tmp_path / "alone")
    assert same_state(ddp["policy"], alone["policy"])
    settings = schema.load(cfgs["ddp"]).searcher
    fresh = build_policy(Policy.ppo, Controller(decisions.choices()), settings.controller, seed=0)
    assert not same_state(fresh.state_dict()["controller"], ddp["policy"]["controller"])
    assert [c.genotype.hash for c in results["ddp"].candidates] == [
        c.genotype.hash for c in results["alone"].candidates
    ]
    summary = results["ddp"].summary
    assert summary["search_ranks"] == 2 and summary["search_children_per_round"] == 2 and summary["search_reward_curve"]

    # replay from the recorded children: rounds of 2 and 1 samples from one controller state each,
    # then the updates in child order, give the ranks' controller
    children = ddp["children"]
    policy = build_policy(Policy.ppo, Controller(decisions.choices()), settings.controller, seed=0)
    sampler = torch.Generator().manual_seed(0)
    for chunk in (children[:2], children[2:]):
        sampled = [policy.sample(sampler) for _ in chunk]
        assert [s[0] for s in sampled] == [decisions.from_arch(c["genotype"]["arch"]) for c in chunk]
        for (actions, log_prob, _), child in zip(sampled, chunk):
            assert log_prob == pytest.approx(child["log_prob"], abs=1e-6)
            policy.update(actions, log_prob, child["reward"])
    assert same_state(policy.state_dict()["controller"], ddp["policy"]["controller"])

    # the early-stopping flags follow the rule on the stage-1 rewards in child order
    stopper = ProgressiveStopper(
        0.3, settings.early_stopping.tolerance, 0.5, dict(settings.early_stopping.schedule), seed=0
    )
    assert [not stopper.step(c["stage1_reward"]) for c in children] == [c["stopped_early"] for c in children]


def test_fewer_children_per_round_than_ranks_is_refused(make_cfg, tmp_path: Path) -> None:
    from segnas.errors import ConfigError
    from segnas.searchers.auxcell.module import children_per_round as _children_per_round

    settings = schema.load(make_cfg(*SETTINGS)).searcher
    assert _children_per_round(settings, 1) == 1 and _children_per_round(settings, 4) == 4
    settings.children_per_round = 3
    assert _children_per_round(settings, 2) == 3
    with pytest.raises(ConfigError, match=r"searcher\.children_per_round=3.*\(4\)"):
        _children_per_round(settings, 4)


def test_ddp_retraining_finds_the_dead_parameters_of_auxcell_networks(make_cfg) -> None:
    """arch0's blocks take encoder maps 3, 2 and 0: the projection of map 1 never reaches the
    output, which stops plain DDP at its first step."""
    from segnas import spaces
    from segnas.training.trainer import ddp_strategy, dead_parameters

    arch0 = spaces.build(spaces.resolve_arch("auxcell-arch0"), 5)
    assert dead_parameters(arch0) == ["decoder.adapt.1.0.weight", "decoder.adapt.1.1.weight", "decoder.adapt.1.1.bias"]
    assert ddp_strategy(make_cfg("trainer=ddp"), arch0) == {"strategy": "ddp_find_unused_parameters_true"}
    assert ddp_strategy(make_cfg("trainer=ddp_spawn"), arch0) == {"strategy": "ddp_spawn_find_unused_parameters_true"}
    assert ddp_strategy(make_cfg(), arch0) == {}
    deeplab = spaces.build(spaces.resolve_arch("deeplabv3plus-mobilenetv2"), 5)
    assert dead_parameters(deeplab) == [] and ddp_strategy(make_cfg("trainer=ddp"), deeplab) == {}
    assert all(p.grad is None for p in arch0.parameters()) and arch0.training  # left as found


@pytest.mark.slow
def test_trainer_ddp_search_and_retrain_on_two_cpu_ranks(tmp_path: Path) -> None:
    """The whole command under trainer=ddp (Lightning relaunches it for rank 1): the ranks join
    before the search, train one child each per round, rank 0 alone writes the files, and the
    winner (an auxcell network with a dead projection) retrains on both ranks."""
    import json
    import subprocess
    import sys

    from tests.conftest import TINY, subprocess_env

    run_dir = tmp_path / "run"
    ddp = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.benchmark=false",
        "trainer.sync_batchnorm=false",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segnas.run",
            *TINY,
            *SETTINGS,
            "searcher.retrain_epochs=1",
            *ddp,
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = rows(run_dir / "search.csv")
    assert [(int(r["child"]), int(r["rank"])) for r in table] == [(0, 0), (1, 1), (2, 0)]  # one writer
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["search_ranks"] == 2 and summary["search_children"] == 3
    assert summary["genotype_hash"] in {r["genotype_hash"] for r in table} and 0.0 <= summary["val_mIoU"] <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_children_train_on_the_gpu_and_a_host_cache_gives_the_same_children(make_cfg, tmp_path: Path) -> None:
    results = {}
    for name, extra in (("gpu", []), ("host_cache", ["searcher.stage1.cache_device=cpu"])):
        (tmp_path / name).mkdir()
        result = run_search(make_cfg(*SETTINGS, *extra, run_dir=tmp_path / name))
        assert result.summary["search_device"].startswith("cuda")
        results[name] = rows(tmp_path / name / "search.csv")
    for gpu, host in zip(results["gpu"], results["host_cache"]):
        assert gpu["encoding"] == host["encoding"]
        assert float(gpu["reward"]) == pytest.approx(float(host["reward"]), abs=1e-4)
