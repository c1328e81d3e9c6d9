"""searcher=fmas end to end through segnas.pipeline.run on tiny data: supernet trained here,
searched, front fine-tuned; and each latency target as an objective."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from segnas import pipeline
from segnas.training import load_network
from tests.conftest import TINY, compose_config, run_search, write_voc_layout

FMAS = [
    "searcher=fmas",
    "searcher.supernet_epochs=1",
    "searcher.pop_size=4",
    "searcher.generations=2",
    "searcher.val_images=4",
    "searcher.calib_images=4",
    "retrain.epochs=1",
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def assert_non_dominated(rows: list[dict[str, str]], cost: str) -> None:
    F = np.array([[1 - float(r["miou"]), float(r[cost])] for r in rows])
    assert len(NonDominatedSorting().do(F, only_non_dominated_front=True)) == len(rows)


@pytest.fixture(scope="module")
def fmas_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fmas") / "run"
    return run_dir, pipeline.run(compose_config(f"run_dir={run_dir}", *FMAS))


def test_run_writes_the_search_files(fmas_run) -> None:
    run_dir, _summary = fmas_run
    for name in (
        "config.yaml",
        "genotype.yaml",
        "pareto.csv",
        "pareto.png",
        "search.csv",
        "summary.json",
        "last.ckpt",
        "model.pt",
        "model.onnx",
        "supernet/model.pt",
    ):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["searcher"] == "fmas" and on_disk["space"] == "elastic-deeplabv3plus"
    for key in (
        "search_wall_time_s",
        "search_steps",
        "search_images_seen",
        "hypervolume",
        "front_size",
        "val_mIoU",
        "macs",
        "params",
        "supernet",
        "supernet_miou",
        "front_finetuned",
    ):
        assert on_disk[key] is not None, key
    assert on_disk["supernet_trained_here"] and on_disk["generations"] == 2
    assert on_disk["finetuned_hypervolume"] > 0  # the fine-tuned front on the search's reference point
    assert on_disk["hypervolume"] > 0 and on_disk["macs"] < on_disk["supernet_macs"]
    assert yaml.safe_load((run_dir / "genotype.yaml").read_text())["hash"] == on_disk["genotype_hash"]


def test_the_whole_front_is_fine_tuned_and_reported_before_and_after(fmas_run) -> None:
    """searcher.top_k=null (the default, the paper's): every front member is fine-tuned; pareto.csv
    marks each, and summary.json lists each with its search and fine-tuned mIoU."""
    run_dir, summary = fmas_run
    rows = read_csv(run_dir / "pareto.csv")
    assert len(rows) == summary["front_size"] >= 1
    assert_non_dominated(rows, "macs")
    tuned = {e["genotype_hash"]: e["val_mIoU"] for e in summary["retrained"]}
    assert summary["front_finetuned"] == len(tuned) == len(rows)
    members = {m["genotype_hash"]: m for m in summary["front_members"]}
    assert list(members) == [row["genotype_hash"] for row in rows]
    for row in rows:
        assert row["finetuned"] == "True"
        assert float(row["finetuned_miou"]) == pytest.approx(tuned[row["genotype_hash"]])
        member = members[row["genotype_hash"]]
        assert member["search_miou"] == pytest.approx(float(row["miou"]))
        assert member["finetuned_miou"] == pytest.approx(tuned[row["genotype_hash"]])
        assert member["macs"] == int(row["macs"])


def test_top_k_bounds_the_fine_tuned_front(fmas_run, tmp_path: Path) -> None:
    run_dir, _ = fmas_run
    cfg = compose_config(
        f"run_dir={tmp_path}", *FMAS, "searcher.top_k=1", f"searcher.supernet={run_dir / 'supernet' / 'model.pt'}"
    )
    result = run_search(cfg)
    assert len(result.candidates) == 1
    reported = result.on_retrained([])  # retrain.epochs=0: nothing fine-tuned, every member still listed
    assert reported["front_finetuned"] == 0 and len(reported["front_members"]) == result.summary["front_size"]
    assert all(m["finetuned_miou"] is None for m in reported["front_members"])


def test_the_fine_tuned_winner_reloads(fmas_run) -> None:
    run_dir, summary = fmas_run
    genotype, num_classes, net = load_network(run_dir / "model.pt")
    assert genotype.hash == summary["genotype_hash"] and num_classes == 5
    from segnas.hardware import count_params

    assert count_params(net) == summary["params"]


@pytest.mark.parametrize("hardware", ["gap8", "cpu", "onnx_cpu"])
def test_latency_targets_as_objective(fmas_run, hardware: str, tmp_path: Path) -> None:
    run_dir, _ = fmas_run
    cfg = compose_config(
        f"run_dir={tmp_path}",
        *FMAS,
        f"hardware={hardware}",
        "searcher.generations=1",
        f"searcher.supernet={run_dir / 'supernet' / 'model.pt'}",
        "searcher.objectives=[miou,latency,params]",
    )
    result = run_search(cfg)
    rows = read_csv(tmp_path / "pareto.csv")
    assert rows and all(float(r["latency_ms"]) > 0 for r in rows)
    assert all(r["latency_estimated"] == str(hardware == "gap8") for r in rows)
    assert result.summary["latency_estimated"] is (hardware == "gap8")
    F = np.array([[1 - float(r["miou"]), float(r["latency_ms"]), float(r["params"])] for r in rows])
    assert len(NonDominatedSorting().do(F, only_non_dominated_front=True)) == len(rows)


def test_on_a_voc_layout_folder(tmp_path: Path) -> None:
    root = write_voc_layout(tmp_path / "VOC2012", num_classes=3)
    tiny = [o for o in TINY if not o.startswith("data")]
    summary = pipeline.run(
        compose_config(
            f"run_dir={tmp_path / 'run'}",
            *tiny,
            *FMAS,
            "searcher.val_images=2",
            "data=voc",
            f"data.root={root}",
            "data.num_classes=3",
            "data.crop_size=32",
            "data.batch_size=2",
            "data.num_workers=0",
            tiny=False,
        )
    )
    assert summary["data"] == "voc" and summary["num_classes"] == 3
    # the real-format fixture too: no fine-tuned member ends below its held-out score before fine-tuning
    assert all(e["holdout_mIoU"] >= e["holdout_mIoU_before_finetune"] - 1e-9 for e in summary["retrained"])
    assert_non_dominated(read_csv(tmp_path / "run" / "pareto.csv"), "macs")


def test_pipeline_resume_continues_the_search_into_a_new_run_dir(fmas_run, tmp_path: Path) -> None:
    run_dir, _ = fmas_run
    first = tmp_path / "first"
    supernet = f"searcher.supernet={run_dir / 'supernet' / 'model.pt'}"
    pipeline.run(compose_config(f"run_dir={first}", *FMAS, supernet, "searcher.generations=1", "retrain.epochs=0"))
    resumed = tmp_path / "resumed"
    summary = pipeline.run(
        compose_config(f"run_dir={resumed}", *FMAS, "searcher.generations=2", "retrain.epochs=0", f"resume={first}")
    )
    assert summary["generations"] == 2 and summary["supernet"] == str(run_dir / "supernet" / "model.pt")
    rows = read_csv(resumed / "search.csv")
    assert [r["generation"] for r in rows] == ["1", "2"]
    assert rows[0] == read_csv(first / "search.csv")[0]
    assert not (resumed / "supernet").exists(), "the resumed search must reuse the recorded supernet"


def test_the_winner_is_chosen_on_held_out_train_and_reported_on_the_rest_of_val(fmas_run) -> None:
    """Issue 13, item 7: FMAS scores candidates on a val subset (the paper's protocol), so the result
    is reported on the rest of val; the fine-tuned front members are chosen among on a held-out part
    of train that none of them trained on."""
    from hydra.utils import instantiate

    run_dir, summary = fmas_run
    assert summary["val_images_reported"] == 8 - 4 and "4 images the search scored" in summary["val_report"]
    retrained = summary["retrained"]
    if len(retrained) > 1:
        assert summary["retrain_holdout_images"] == 2  # 10 % of 16, rounded
        assert all("holdout_mIoU" in entry and "val_mIoU" in entry for entry in retrained)
        best = max(retrained, key=lambda entry: entry["holdout_mIoU"])
        assert summary["genotype_hash"] == best["genotype_hash"]
        assert summary["winner_selected_on"].startswith("held-out")
        # those images never reached a retraining loader
        cfg = compose_config(f"run_dir={run_dir}", *FMAS)
        datamodule = instantiate(cfg.data)
        held_out = datamodule.hold_out_train(0.1)
        assert set(held_out).isdisjoint(datamodule.dataset("train").indices)
        assert len(datamodule.dataset("train")) == 14
    else:
        assert summary["winner_selected_on"] == "the only candidate"
    # the scored val subset and the reported rest are disjoint and cover val
    datamodule = instantiate(compose_config(f"run_dir={run_dir}", *FMAS).data)
    scored = datamodule.val_subset(4).indices
    datamodule.reserve_val(scored)
    assert sorted(scored + datamodule.dataset("val").indices) == list(range(8))


def test_scoring_on_all_of_val_is_refused_before_the_supernet_trains(tmp_path: Path) -> None:
    from segnas.errors import ConfigError

    cfg = compose_config(f"run_dir={tmp_path}", *FMAS, "searcher.val_images=8")
    with pytest.raises(ConfigError, match="searcher.val_images=8.*all 8 val images"):
        run_search(cfg)
    assert not (tmp_path / "supernet").exists()


def test_fine_tuning_has_its_own_schedule_and_never_ends_below_its_start(fmas_run) -> None:
    """Issue 16, section 2: the front is fine-tuned at train.optimizer's lr x 0.1 with a cosine
    schedule after a warm-up, and each member keeps the best of its weights before fine-tuning
    and after each epoch by the held-out train score: never below where it started there."""
    _, summary = fmas_run
    for entry in summary["retrained"]:
        assert entry["finetune_lr"] == pytest.approx(2e-4) and entry["finetune_scheduler"] == "cosine"
        assert entry["holdout_mIoU"] >= entry["holdout_mIoU_before_finetune"] - 1e-9
        kept = entry["finetune_kept"]
        assert kept in ("best epoch", "weights before fine-tuning")
        if kept == "best epoch":
            assert entry["holdout_mIoU"] == pytest.approx(entry["holdout_mIoU_best_epoch"])
        else:
            assert entry["holdout_mIoU"] == pytest.approx(entry["holdout_mIoU_before_finetune"])


def test_a_loaded_supernet_keeps_its_training_facts(fmas_run, tmp_path) -> None:
    """A search that slices another run's supernet (random-FMAS in task=compare, a resumed search,
    a table) reports the images that supernet's training saw, so budgets read the same for both."""
    from types import SimpleNamespace

    from segnas.searchers.fmas.supernet import obtain
    from segnas.settings import schema
    from segnas.spaces.elastic_deeplabv3plus import ElasticDeepLabV3PlusSpace
    from segnas.tasks.search import context

    run_dir, summary = fmas_run
    assert summary["supernet_trained_here"] and summary["supernet_images_seen"] > 0
    cfg = compose_config(f"run_dir={tmp_path}", *FMAS, f"searcher.supernet={run_dir / 'supernet' / 'model.pt'}")
    settings = schema.load(cfg)
    handed = context(cfg, settings, tmp_path, None, None, SimpleNamespace(num_classes=summary["num_classes"]))
    _, _, facts = obtain(settings.searcher, handed, ElasticDeepLabV3PlusSpace())
    assert not facts["supernet_trained_here"]
    for key in ("supernet_images_seen", "supernet_epochs", "supernet_backbone_weights"):
        assert facts[key] == summary[key], key


def test_one_data_module_per_run_and_one_writer_of_the_front_files(
    fmas_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: the pipeline's data module is the one the search trains, scores and reports on
    (instantiated once), and pareto.csv / pareto.png are written only by pareto.write_front (after
    the search, then again by the hook with the fine-tuned scores), each replaced atomically."""
    import os

    from segnas.data import SyntheticDataModule
    from segnas.searchers.fmas import pareto, searcher

    run_dir, _ = fmas_run
    built, writes, inside = [], [], []
    init, replace, write_front = SyntheticDataModule.__init__, os.replace, pareto.write_front

    def counted(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    def replaced(source, destination):
        writes.append((Path(destination).name, bool(inside)))
        replace(source, destination)

    def writer(*args, **kwargs):
        inside.append(1)
        try:
            return write_front(*args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(SyntheticDataModule, "__init__", counted)
    monkeypatch.setattr(os, "replace", replaced)
    monkeypatch.setattr(searcher, "write_front", writer)
    summary = pipeline.run(
        compose_config(
            f"run_dir={tmp_path}", *FMAS, "searcher.top_k=1", f"searcher.supernet={run_dir / 'supernet' / 'model.pt'}"
        )
    )
    assert len(built) == 1
    front_files = [(name, by_writer) for name, by_writer in writes if name in ("pareto.csv", "pareto.png")]
    assert front_files == [("pareto.csv", True), ("pareto.png", True)] * 2  # after the search, after retraining
    rows = read_csv(tmp_path / "pareto.csv")
    assert [row["finetuned"] for row in rows].count("True") == summary["front_finetuned"] == 1
