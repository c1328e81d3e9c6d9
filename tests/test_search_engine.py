"""The one engine every searcher runs on: a search killed in the middle of a unit resumes from
Lightning's checkpoint with the same next sample, the budget stops fit and says why, and a
search module hands neither DDP nor the BatchNorm layer sync any network of its own."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from segnas.searchers.contract import SearchContext
from segnas.searchers.engine import STATE_KEY, state_digest
from segnas.searchers.registry import registration
from segnas.searchers.result import SearchResult
from segnas.settings import schema
from segnas.tasks.search import context
from tests.conftest import compose_config

AUXCELL = [
    "searcher=auxcell",
    "searcher.children=3",
    "searcher.stage1.num_crops=8",
    "searcher.stage1.batch_size=4",
    "searcher.stage1.epochs=1",
    "searcher.stage2.enabled=false",
    "searcher.reward.holdout_min=4",
    "searcher.controller.ppo.minibatch_size=2",
    "searcher.reward.omit_classes=[]",
]  # children this small earn 0 without background: nothing to learn from
FMAS = [
    "searcher=fmas",
    "searcher.pop_size=4",
    "searcher.val_images=4",
    "searcher.calib_images=4",
    "data.eval_batch_size=2",
    "searcher.generations=3",
]


def search_context(run_dir: Path, *overrides: str, resume: Path | None = None) -> tuple[Any, SearchContext]:
    """(the searcher's settings, the context task=search would hand it) of a tiny config."""
    cfg = compose_config(f"run_dir={run_dir}", *overrides)
    settings = schema.load(cfg)
    return settings.searcher, context(cfg, settings, run_dir, resume, None, instantiate(cfg.data))


def search(run_dir: Path, *overrides: str, resume: Path | None = None) -> SearchResult:
    """The search a config names, run as task=search runs it (no logger, no retraining)."""
    settings, handed = search_context(run_dir, *overrides, resume=resume)
    return registration(settings.name).search()(settings, handed)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in csv.DictReader(handle)]


class Killed(RuntimeError):
    pass


def killed_on_call(real, call: int):
    """``real``, raising on its ``call``-th call: a job killed half-way through a unit."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Killed("killed")
        return real(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("searcher", ["auxcell", "fmas"])
def test_a_search_killed_mid_unit_resumes_with_the_same_next_sample(
    searcher: str, supernet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides, unit = (
        (AUXCELL, "run_round")
        if searcher == "auxcell"
        else ([*FMAS, f"searcher.supernet={supernet_file}"], "run_generation")
    )
    modules = {"auxcell": "segnas.searchers.auxcell.module", "fmas": "segnas.searchers.fmas.module"}
    straight, killed, resumed = (tmp_path / name for name in ("straight", "killed", "resumed"))
    for path in (straight, killed, resumed):
        path.mkdir()
    search(straight, *overrides)
    with monkeypatch.context() as patch:
        real = getattr(__import__(modules[searcher], fromlist=[unit]), unit)
        patch.setattr(f"{modules[searcher]}.{unit}", killed_on_call(real, 3))  # in the third unit
        with pytest.raises(Killed):
            search(killed, *overrides)
    state = torch.load(killed / "last.ckpt", weights_only=False)
    assert state["epoch"] == 1  # the last finished unit is the second
    search(resumed, *overrides, resume=killed / "last.ckpt")
    assert rows(resumed / "search.csv") == rows(straight / "search.csv")
    final = {
        name: torch.load(path / "last.ckpt", weights_only=False)[STATE_KEY]["search"]
        for name, path in (("straight", straight), ("resumed", resumed))
    }
    if searcher == "auxcell":
        assert state_digest(final["straight"]["policy"]) == state_digest(final["resumed"]["policy"])
    else:
        assert list(final["straight"]["cache"]) == list(final["resumed"]["cache"])


def test_the_budget_stops_fit_after_a_unit_and_says_why(supernet_file: Path, tmp_path: Path) -> None:
    result = search(tmp_path, *FMAS, f"searcher.supernet={supernet_file}", "budget.images=1")
    assert result.summary["generations"] == 1  # the first unit always runs
    assert "budget.images=1 spent" in result.summary["search_budget_exhausted"]
    assert len(rows(tmp_path / "search.csv")) == 1


def test_search_modules_hold_no_registered_network(supernet_file: Path, tmp_path: Path) -> None:
    """Candidates, children and the controller are not the module's children: DDP has nothing to
    wrap and the layer sync nothing to convert, so no rank's BatchNorm statistics are
    all-reduced with another rank's different network."""
    from segnas.searchers.auxcell.module import AuxCellSearchModule
    from segnas.searchers.fmas.module import FMASSearchModule
    from segnas.spaces import get_space
    from segnas.training import load_network
    from segnas.training.layer_sync import TimmSyncBatchNorm

    genotype, _, supernet = load_network(supernet_file)
    space = get_space("elastic-deeplabv3plus")
    full = space.genotype({k: v for k, v in genotype.arch.items() if k not in ("depths", "widths")})
    fmas, handed = search_context(tmp_path, *FMAS, f"searcher.supernet={supernet_file}")
    auxcell, auxcell_context = search_context(tmp_path, *AUXCELL)
    modules = [
        FMASSearchModule(
            fmas,
            space,
            full,
            supernet,
            None,
            {"supernet": str(supernet_file)},
            protocol=handed.protocol,
            input_size=(32, 32),
            target=None,
        ),
        AuxCellSearchModule(auxcell, auxcell_context, 2),
    ]
    for module in modules:
        assert list(module.children()) == [] and list(module.parameters()) == []
        TimmSyncBatchNorm().apply(module)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in supernet.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in supernet.modules()) > 10
