"""task=compare: runs every entry, gathers runs from folders, survives a failing run, keeps
finished runs on resume; the tables agree with the runs' own summaries."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from segnas import pipeline
from segnas.errors import ConfigError
from segnas.tasks import search as search_task
from segnas.tasks.compare import plan
from segnas.tasks.summary import final_metrics
from tests.conftest import compare_cfg, compose_config


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_plan_pairs_each_searcher_with_its_random_baseline() -> None:
    cfg = compose_config("run_dir=/tmp/x")
    assert plan(cfg.compare) == [
        ("autodeeplab", "autodeeplab"),
        ("random-autodeeplab", "autodeeplab"),
        ("auxcell", "auxcell"),
        ("random-auxcell", "auxcell"),
        ("fmas", "fmas"),
        ("random-fmas", "fmas"),
    ]
    with pytest.raises(ConfigError, match="compare.searchers"):
        plan(compose_config("run_dir=/tmp/x", "compare.searchers=[darts]").compare)


def test_compare_runs_searcher_and_baseline_over_seeds(tiny_comparison) -> None:
    run_dir, summary = tiny_comparison
    assert summary["runs"] == 4 and summary["failed"] == 0
    table = read_csv(run_dir / "comparison.csv")
    assert [(r["label"], r["seed"]) for r in table] == [
        ("autodeeplab", "0"),
        ("random-autodeeplab", "0"),
        ("autodeeplab", "1"),
        ("random-autodeeplab", "1"),
    ]
    for row in table:
        run = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert float(row["val_mIoU"]) == pytest.approx(run["val_mIoU"])
        assert int(row["params"]) == run["params"] and int(row["retrain_epochs"]) == 1
        assert run["seed"] == int(row["seed"]) and run["retrained"][0]["epochs"] == 1
    # the random baseline ran the Auto-DeepLab search's own settings, at its step count
    baseline = json.loads((run_dir / "runs" / "random-autodeeplab_seed0" / "summary.json").read_text())
    searched = json.loads((run_dir / "runs" / "autodeeplab_seed0" / "summary.json").read_text())
    assert baseline["search_steps"] == searched["search_steps"] == 6
    assert baseline["search_images_seen"] == searched["search_images_seen"]


def test_compare_markdown_has_means_and_spreads_of_the_runs(tiny_comparison) -> None:
    run_dir, _ = tiny_comparison
    text = (run_dir / "comparison.md").read_text()
    table = read_csv(run_dir / "comparison.csv")
    values = [float(r["val_mIoU"]) for r in table if r["label"] == "autodeeplab"]
    expected = f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"
    line = next(li for li in text.splitlines() if li.startswith("| autodeeplab |"))
    assert expected in line and "| 2/2 |" in line
    assert "autodeeplab − random-autodeeplab:" in text
    assert (run_dir / "comparison.png").stat().st_size > 0


def test_compare_runs_share_one_wandb_group(tiny_comparison) -> None:
    run_dir, _ = tiny_comparison
    groups = set()
    for name in ("autodeeplab_seed0", "random-autodeeplab_seed1"):
        config = yaml.safe_load((run_dir / "runs" / name / "config.yaml").read_text())
        groups.add(config["logger"]["group"])
        assert config["logger"]["name"] == name.replace("_seed", "-seed")
        assert list((run_dir / "runs" / name / "wandb").glob("offline-run-*"))
    assert groups == {f"compare-{run_dir.name}"}


def test_gather_reads_runs_from_a_multirun_folder(tiny_comparison, tmp_path: Path) -> None:
    run_dir, _ = tiny_comparison
    gathered = pipeline.run(
        compose_config("task=compare", f"run_dir={tmp_path / 'g'}", f"compare.gather={run_dir / 'runs'}")
    )
    assert gathered["runs"] == 4

    def key(row):
        return row["label"], row["seed"]

    assert sorted(read_csv(tmp_path / "g" / "comparison.csv"), key=key) == sorted(
        read_csv(run_dir / "comparison.csv"), key=key
    )
    with pytest.raises(ConfigError, match="no task=search run"):
        pipeline.run(compose_config("task=compare", f"run_dir={tmp_path / 'e'}", f"compare.gather={tmp_path}/g"))


def test_a_failing_run_is_recorded_and_the_rest_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = search_task.run

    def flaky(cfg):
        if cfg.searcher.name == "random":
            raise RuntimeError("out of memory")
        return real(cfg)

    monkeypatch.setattr(search_task, "run", flaky)
    summary = pipeline.run(compare_cfg(tmp_path / "run", "compare.seeds=[0]"))
    assert summary["failed"] == 1
    rows = {r["label"]: r for r in read_csv(tmp_path / "run" / "comparison.csv")}
    assert rows["random-autodeeplab"]["status"] == "failed"
    assert "out of memory" in rows["random-autodeeplab"]["error"] and rows["autodeeplab"]["status"] == "ok"
    assert "| random-autodeeplab | 0/1 |" in (tmp_path / "run" / "comparison.md").read_text()

    def refuse(cfg):
        assert cfg.searcher.name == "random", "a finished run was run again"
        return real(cfg)

    monkeypatch.setattr(search_task, "run", refuse)
    with pytest.raises(ConfigError, match="already holds a run"):
        pipeline.run(compare_cfg(tmp_path / "run", "compare.seeds=[0]"))
    resumed = pipeline.run(compare_cfg(tmp_path / "run", "compare.seeds=[0]", "resume=true"))
    assert resumed["failed"] == 0


def test_every_run_ends_with_the_same_wandb_metric_names(tiny_comparison) -> None:
    run_dir, _ = tiny_comparison
    names = set()
    for summary_file in sorted((run_dir / "runs").glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        metrics = final_metrics(summary)
        assert metrics["retrain/val_mIoU"] == pytest.approx(summary["val_mIoU"])
        assert metrics["search/images_seen"] == summary["search_images_seen"]
        assert metrics["cost/params"] == summary["params"]
        names.add(frozenset(metrics))
    assert len(names) == 1
    assert {"search/wall_time_s", "search/steps", "cost/macs", "cost/latency_ms"} <= set(next(iter(names)))


def test_fmas_and_its_random_baseline_search_the_same_supernet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 13, item 21: the baseline of a seed slices the supernet that seed's FMAS run trained
    seen: list[tuple[str, int, str | None]] = []

    draws: list[tuple[int, float]] = []

    def record(cfg):
        supernet = cfg.searcher.fmas.supernet if cfg.searcher.name == "random" else cfg.searcher.supernet
        seen.append((cfg.searcher.name, int(cfg.seed), supernet))
        draws.append((int(cfg.seed), torch.rand(1).item()))
        if cfg.searcher.name == "fmas":
            if cfg.seed == 1:
                raise RuntimeError("out of memory")  # no supernet left: the baseline trains its own
            return {"task": "search", "supernet": f"{cfg.run_dir}/supernet/model.pt", "val_mIoU": 0.5}
        return {"task": "search", "supernet": supernet, "val_mIoU": 0.4}

    monkeypatch.setattr(search_task, "run", record)
    pipeline.run(
        compose_config(
            "task=compare",
            f"run_dir={tmp_path / 'run'}",
            "compare.searchers=[fmas]",
            "compare.seeds=[0,1]",
            "compare.baselines=[]",
        )
    )
    runs = tmp_path / "run" / "runs"
    assert seen == [
        ("fmas", 0, None),
        ("random", 0, f"{runs / 'fmas_seed0'}/supernet/model.pt"),
        ("fmas", 1, None),
        ("random", 1, None),
    ]
    # every run starts from its seed's random state, as `python -m segnas.run seed=k` would
    expected = {seed: torch.manual_seed(seed) and torch.rand(1).item() for seed in (0, 1)}
    assert draws == [(s, expected[s]) for s in (0, 0, 1, 1)]


def test_hand_designed_baselines_train_like_the_winners_and_pair_with_each_searcher(tmp_path: Path) -> None:
    """Issue 16, section 6: a preset trained with the winners' schedule and epochs, on the same
    seeds and data, scored the same way, in the tables and the paired statistics."""
    from tests.conftest import TINY_ADL

    listed = ",".join(f'"{o}"' for o in TINY_ADL)
    summary = pipeline.run(
        compose_config(
            "task=compare",
            f"run_dir={tmp_path / 'run'}",
            "compare.searchers=[autodeeplab]",
            "compare.random_baselines=false",
            f"compare.overrides.autodeeplab=[{listed}]",
            "compare.retrain_epochs=1",
            "compare.baselines=[deeplabv3plus-mobilenetv2]",
            "compare.baseline_backbone_weights=null",
        )
    )
    assert summary["runs"] == 4 and summary["failed"] == 0
    rows = read_csv(tmp_path / "run" / "comparison.csv")
    assert [(r["label"], r["seed"]) for r in rows] == [
        ("autodeeplab", "0"),
        ("autodeeplab", "1"),
        ("baseline-deeplabv3plus-mobilenetv2", "0"),
        ("baseline-deeplabv3plus-mobilenetv2", "1"),
    ]
    for seed in (0, 1):
        run = json.loads(
            (tmp_path / "run" / "runs" / f"baseline-deeplabv3plus-mobilenetv2_seed{seed}" / "summary.json").read_text()
        )
        assert run["task"] == "train" and run["seed"] == seed and run["epochs"] == 1  # compare.retrain_epochs
        searched = json.loads((tmp_path / "run" / "runs" / f"autodeeplab_seed{seed}" / "summary.json").read_text())
        assert run["val_protocol"] == searched["retrained"][0]["val_protocol"]
    text = (tmp_path / "run" / "comparison.md").read_text()
    assert "- autodeeplab − baseline-deeplabv3plus-mobilenetv2: " in text
    with pytest.raises(ConfigError, match="compare.baselines"):
        pipeline.run(compose_config("task=compare", f"run_dir={tmp_path / 'x'}", "compare.baselines=[unet]"))


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "compare").glob("*.yaml"))
)
def test_every_compare_preset_plans_runs_whose_configs_pass(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each preset composes, every one of its runs' configs passes the checks (before any runs), and
    each searcher runs with the preset's overrides: nothing is trained here."""
    from segnas.tasks import compare as compare_task

    planned = []
    monkeypatch.setattr(
        compare_task,
        "_run_one",
        lambda label, seed, sub: (
            planned.append((label, seed, sub))
            or {"label": label, "seed": seed, "run_dir": Path(sub.run_dir), "error": "not run"}
        ),
    )
    settings = yaml.safe_load((Path(__file__).parents[1] / "conf" / "compare" / f"{preset}.yaml").read_text())
    summary = pipeline.run(compose_config("task=compare", f"compare={preset}", f"run_dir={tmp_path / 'run'}"))
    seeds, searchers = settings["seeds"], settings["searchers"]
    assert summary["runs"] == len(planned) == len(seeds) * (2 * len(searchers) + len(settings["baselines"]))
    for label, seed, sub in planned:
        assert seed in seeds and sub.seed == seed
        name = label.removeprefix("random-")
        inner = sub.searcher if sub.searcher.name == name else sub.searcher.get(name)
        for override in settings["overrides"].get(name, []) if inner is not None else []:
            key, value = override.split("=", 1)
            assert str(OmegaConf.select(inner, key.removeprefix("searcher."))).replace(" ", "").replace(
                "'", ""
            ) == value.strip('"'), (label, override)
