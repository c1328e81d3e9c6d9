"""Search-strategy benchmark tables (task=tabulate) and replays (task=replay): the table holds what
the search itself would have recorded, a replay of NSGA-II against it follows the very generations
the real search ran, the anytime hypervolume agrees with pymoo on every prefix, the statistics
agree with scipy, the auxcell surrogate and lockstep replay behave, and bad input is refused
before any work starts."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy import stats

from segnas import pipeline
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.report.statistics import kendall, unpaired
from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.settings import Policy
from segnas.searchers.fmas.nsga import SearchState, build_search_algorithm, run_generation
from segnas.searchers.fmas.pareto import hypervolume, objective_matrix
from segnas.settings import schema
from segnas.spaces import get_space
from segnas.tables import auxcell, curves, fmas, store, surrogate
from tests.conftest import compose_config

#: 2 ASPP and 2 decoder widths x each of 3 ASPP rates kept or not: 32 sub-networks, fixed depths and widths.
SPACE = ["searcher.width_ratios=[1.0]", "searcher.head_ratios=[0.5,1.0]", "searcher.min_depth=99"]
SCORING = ["searcher=fmas", "searcher.val_images=4", "searcher.calib_images=4", "data.eval_batch_size=2"]


@pytest.fixture(scope="module")
def fmas_table(supernet_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("table")
    cfg = compose_config(
        "task=tabulate",
        f"run_dir={run_dir}",
        *SCORING,
        *SPACE,
        f"searcher.supernet={supernet_file}",
        "tabulate.chunk=5",
    )
    summary = pipeline.run(cfg)
    return run_dir, summary


def test_the_table_holds_every_sub_network_once(fmas_table) -> None:
    run_dir, summary = fmas_table
    meta, rows = store.read(run_dir)
    assert summary["architectures"] == summary["space_size"] == meta["size"] == len(rows) == 32
    assert len({r["genotype_hash"] for r in rows}) == 32
    space = get_space(meta["space"])
    encoding = fmas.encoding_of(space, Genotype.from_dict(meta["full"]), meta["settings"])
    for row in rows:  # every row's genes decode to its genotype
        assert encoding.decode(row["genes"]).hash == row["genotype_hash"]
        assert 0.0 <= row["miou"] <= 1.0 and row["params"] > 0 and row["macs"] > 0
    full = Genotype.from_dict(meta["full"])
    assert any(r["genotype_hash"] == full.hash for r in rows)
    assert meta["scale"]["macs"] == max(r["macs"] for r in rows)  # the full network is the dearest


def test_a_replay_of_nsga2_follows_the_real_search(fmas_table, supernet_file, tmp_path) -> None:
    """The real FMAS search (slicing and scoring) and a replay against the table, same seed and
    settings: the same generations, hypervolumes and scores."""
    from tests.conftest import run_search

    run_dir, _ = fmas_table
    meta, rows = store.read(run_dir)
    cfg = compose_config(
        f"run_dir={tmp_path / 'search'}",
        *SCORING,
        *SPACE,
        f"searcher.supernet={supernet_file}",
        "searcher.pop_size=6",
        "searcher.generations=3",
        "searcher.seed=3",
    )
    run_search(cfg)
    with (tmp_path / "search" / "search.csv").open() as handle:
        real = list(csv.DictReader(handle))
    space = get_space(meta["space"])
    encoding = fmas.encoding_of(space, Genotype.from_dict(meta["full"]), meta["settings"])
    state = SearchState(build_search_algorithm("nsga2", encoding, 2, 6, 3, 3, crossover_prob=0.9))
    scorer = fmas.TableScorer(rows)
    replayed = [
        run_generation(state, encoding, scorer, meta["objectives"], meta["scale"], [1.0, 1.1])[0] for _ in range(3)
    ]
    for ours, theirs in zip(replayed, real):
        assert ours["hypervolume"] == pytest.approx(float(theirs["hypervolume"]), abs=1e-9)
        assert (ours["scored"], ours["cache_hits"], ours["front_size"]) == (
            int(theirs["scored"]),
            int(theirs["cache_hits"]),
            int(theirs["front_size"]),
        )


def test_anytime_hypervolume_agrees_with_pymoo_on_every_prefix() -> None:
    rng = np.random.default_rng(0)
    records = [
        {"miou": float(rng.uniform(0.1, 0.9)), "macs": float(rng.uniform(1, 10)), "feasible": True} for _ in range(25)
    ]
    scale, reference = {"macs": 10.0}, [1.0, 1.1]
    ours = fmas.anytime_hypervolume(records, ["miou", "macs"], scale, reference, 30)
    for n in range(1, 26):
        assert ours[n - 1] == pytest.approx(
            hypervolume(objective_matrix(records[:n], ["miou", "macs"], scale), reference)
        )
    assert np.all(ours[25:] == ours[24]) and np.all(np.diff(ours) >= 0)


def test_replay_task_writes_curves_and_statistics(fmas_table, tmp_path) -> None:
    run_dir, _ = fmas_table
    cfg = compose_config(
        "task=replay",
        "searcher=fmas",
        f"run_dir={tmp_path / 'replay'}",
        f"replay.table={run_dir}",
        "replay.seeds=6",
        "replay.evaluations=10",
        "searcher.pop_size=4",
    )
    summary = pipeline.run(cfg)
    assert summary["algorithms"] == ["nsga2", "random"]
    with (tmp_path / "replay" / "replay.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 2 * 6 * 10
    finals = {r["algorithm"]: r for r in summary["final"]}
    for name in ("nsga2", "random"):
        last = [float(r["hypervolume"]) for r in table if r["algorithm"] == name and r["evaluations"] == "10"]
        assert finals[name]["mean"] == pytest.approx(np.mean(last), rel=1e-5)
        assert finals[name]["band_low"] <= finals[name]["mean"] <= finals[name]["band_high"]
        assert max(last) <= summary["optimum"] + 1e-9  # no run beats the whole table's front
    text = (tmp_path / "replay" / "replay.md").read_text()
    assert "nsga2 − random" in text and "Mann-Whitney" in text
    assert (tmp_path / "replay" / "replay.png").stat().st_size > 0


def test_the_table_preset_has_over_5000_sub_networks_and_runs(tmp_path, supernet_file) -> None:
    cfg = compose_config("experiment=fmas_table", "run_dir=/tmp/unused", tiny=False)
    space = get_space("elastic-deeplabv3plus")
    assert cfg.task == "tabulate"
    settings = schema.load(cfg).searcher
    encoding = fmas.encoding_of(space, fmas._full_genotype(settings, space), fmas.recorded(settings))
    assert fmas.space_size(encoding) == 8192
    # and it runs: the first chunk of its table on the tiny data, stopped by a simulated crash
    from segnas.searchers.fmas import evaluator

    calls = []
    real = evaluator.Evaluator.evaluate_many

    def crash_on_the_second_chunk(self, genotypes):
        calls.append(len(genotypes))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, genotypes)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluator.Evaluator, "evaluate_many", crash_on_the_second_chunk)
        run_cfg = compose_config(
            "experiment=fmas_table",
            f"run_dir={tmp_path}",
            f"searcher.supernet={supernet_file}",
            "searcher.val_images=2",
            "searcher.calib_images=2",
            "tabulate.chunk=3",
        )
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(run_cfg)
    kept = store.read_rows(tmp_path / store.ROWS)
    assert len(kept) == 3  # the first chunk was on disk before the crash
    # resume=true continues: the chunk already written is not scored again
    calls.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            evaluator.Evaluator,
            "evaluate_many",
            lambda self, genotypes: calls.append(len(genotypes)) or real(self, genotypes),
        )
        patch.setattr(
            fmas, "all_genes", lambda encoding: iter([tuple(r["genes"]) for r in kept] + [(1,) * encoding.n_var])
        )
        pipeline.run(
            compose_config(
                "experiment=fmas_table",
                f"run_dir={tmp_path}",
                f"searcher.supernet={supernet_file}",
                "searcher.val_images=2",
                "searcher.calib_images=2",
                "tabulate.chunk=3",
                "resume=true",
            )
        )
    assert calls == [1] and len(store.read_rows(tmp_path / store.ROWS)) == 4


def test_a_space_too_large_is_refused_before_the_supernet_trains(tmp_path) -> None:
    cfg = compose_config("task=tabulate", f"run_dir={tmp_path}", "searcher=fmas", "tabulate.max_architectures=100")
    with pytest.raises(ConfigError, match="tabulate.max_architectures=100"):
        pipeline.run(cfg)
    assert not (tmp_path / "supernet").exists()


def test_replay_refuses_a_missing_table_and_another_searcher(fmas_table, tmp_path) -> None:
    with pytest.raises(ConfigError, match="replay.table"):
        pipeline.run(compose_config("task=replay", "searcher=fmas", f"run_dir={tmp_path / 'a'}"))
    with pytest.raises(ConfigError, match="searcher=fmas"):
        pipeline.run(
            compose_config(
                "task=replay", "searcher=auxcell", f"run_dir={tmp_path / 'b'}", f"replay.table={fmas_table[0]}"
            )
        )


def test_a_torn_last_line_is_dropped_and_the_table_continues(tmp_path) -> None:
    writer = store.TableWriter(tmp_path, ["genotype_hash", "genes", "miou"])
    writer.append(
        [{"genotype_hash": "a", "genes": [0, 1], "miou": 0.5}, {"genotype_hash": "b", "genes": [1], "miou": 0.25}]
    )
    with (tmp_path / store.ROWS).open("a") as handle:
        handle.write('c,"[1, ')  # a crash in the middle of a row
    again = store.TableWriter(tmp_path, ["genotype_hash", "genes", "miou"])
    assert again.done() == {"a", "b"} and again.rows[0]["genes"] == [0, 1]
    again.append([{"genotype_hash": "c", "genes": [2], "miou": None}])
    assert [r["miou"] for r in store.read_rows(tmp_path / store.ROWS)] == [0.5, 0.25, None]
    with pytest.raises(ConfigError, match="columns"):
        store.TableWriter(tmp_path, ["genotype_hash", "miou"])


def test_hashes_that_look_like_numbers_stay_text(tmp_path) -> None:
    writer = store.TableWriter(tmp_path, ["genotype_hash", "miou"])
    writer.append([{"genotype_hash": h, "miou": 0.5} for h in ("30e512abcdef", "000000000123", "123456789012")])
    for _ in range(2):  # opening a table rewrites it: the hashes must survive that too
        again = store.TableWriter(tmp_path, ["genotype_hash", "miou"])
        assert again.done() == {"30e512abcdef", "000000000123", "123456789012"}


def test_a_resumed_table_must_describe_the_same_space(tmp_path) -> None:
    store.write_meta(tmp_path, {"searcher": "fmas", "settings": {"width_ratios": [1.0]}})
    with pytest.raises(ConfigError, match="settings"):
        store.write_meta(tmp_path, {"searcher": "fmas", "settings": {"width_ratios": [0.5, 1.0]}})


def test_unpaired_difference_agrees_with_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.6, 0.05, 40), rng.normal(0.55, 0.05, 30)
    result = unpaired(a, b)
    assert result["mean"] == pytest.approx(a.mean() - b.mean())
    assert result["mannwhitney_p"] == pytest.approx(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert result["ci_low"] < result["mean"] < result["ci_high"] and result["resolved"]
    same = unpaired(np.full(5, 0.3), np.full(5, 0.3))
    assert same["mean"] == 0 and same["mannwhitney_p"] == 1.0 and not same["resolved"]


def test_kendall_agrees_with_scipy() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=50)
    y = x + rng.normal(scale=0.5, size=50)
    result = kendall(x, y)
    assert result["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert result["tau_ci"][0] < result["kendall_tau"] < result["tau_ci"][1]


def test_band_is_the_bootstrap_interval_of_the_mean() -> None:
    values = np.random.default_rng(3).normal(size=(400, 2))
    low, high = curves.band(values)
    sem = values.std(axis=0, ddof=1) / np.sqrt(len(values))
    np.testing.assert_allclose(high - low, 2 * 1.96 * sem, rtol=0.15)


# --- auxcell ---------------------------------------------------------------------------------------


def _synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Children whose reward is a known function of their decisions (op of the first cell op and
    the first connection), so a surrogate has something to learn."""
    choices = decisions.choices("extended")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        genes = [int(rng.integers(c)) for c in choices]
        reward = 0.05 * genes[0] + 0.02 * genes[2 * 3] + float(rng.normal(scale=0.01))
        rows.append({"genotype_hash": str(i), "genes": genes, "reward": reward})
    return rows


def test_features_are_one_hot_per_decision() -> None:
    choices = decisions.choices("extended")
    genes = np.array([[c - 1 for c in choices], [0] * len(choices)])
    X = surrogate.features(genes, choices)
    assert X.shape == (2, sum(choices)) and np.all(X.sum(axis=1) == len(choices))
    assert X[0, choices[0] - 1] == 1 and X[1, 0] == 1


def test_the_surrogate_ranks_held_out_children() -> None:
    forest, fit = auxcell.fit_surrogate(_synthetic_rows(200), decisions.choices("extended"), 0.2)
    assert fit["folds"] == 5 and fit["n"] == 200
    assert fit["kendall_tau"] > 0.5  # out of fold: a real relation is found
    noise = [{**r, "reward": float(v)} for r, v in zip(_synthetic_rows(200), np.random.default_rng(9).normal(size=200))]
    assert abs(auxcell.fit_surrogate(noise, decisions.choices("extended"), 0.2)[1]["kendall_tau"]) < 0.15


def test_the_lockstep_replay_is_each_seeds_own_search(tmp_path) -> None:
    """Seeds run in lockstep (one surrogate call per step) give what one seed alone gives."""
    rows = _synthetic_rows(60)
    settings = schema.load(compose_config("searcher=auxcell", f"run_dir={tmp_path}")).searcher
    meta = {"settings": {"positions": "extended"}, "surrogate": {"folds": 5}}
    together, xs, best, _ = auxcell.replay(meta, rows, ["reinforce", "ppo"], [4, 5], 6, settings)
    alone, _, _, _ = auxcell.replay(meta, rows, ["reinforce", "ppo"], [5], 6, settings)
    # seeds split into stacks of one, shared by two processes
    split, _, _, _ = auxcell.replay(meta, rows, ["reinforce", "ppo"], [4, 5], 6, settings, workers=2, stack=1)
    for name in ("reinforce", "ppo"):
        np.testing.assert_array_equal(together[name][1], alone[name][0])
        np.testing.assert_array_equal(together[name], split[name])
    assert xs == list(range(1, 7)) and np.all(np.diff(together["reinforce"], axis=1) >= 0)
    # and it is the controller a search builds: the same first child as a fresh search's controller
    controller = Controller(decisions.choices("extended"), 100, 2, seed=5)
    policy = build_policy(Policy.reinforce, controller, settings.controller, seed=5)
    first, _, _ = policy.sample(torch.Generator().manual_seed(5))
    forest, _ = auxcell.fit_surrogate(rows, decisions.choices("extended"), 0.2)
    assert alone["reinforce"][0, 0] == pytest.approx(
        float(forest.predict(surrogate.features(np.array([first]), decisions.choices("extended")))[0])
    )


def test_rows_of_a_search_csv(tmp_path) -> None:
    from segnas.spaces.auxcell import AuxCellSpace, to_encoding

    choices = decisions.choices("extended")
    genes = [c - 1 for c in choices]
    arch = AuxCellSpace().validate(decisions.to_arch(genes))
    with (tmp_path / "search.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle,
            [
                "child",
                "status",
                "reward",
                "stage1_reward",
                "stage2_reward",
                "mIoU",
                "genotype_hash",
                "encoding",
                "params",
                "child_s",
            ],
        )
        writer.writeheader()
        writer.writerow(
            {
                "child": 0,
                "status": "ok",
                "reward": 0.3,
                "stage1_reward": 0.2,
                "stage2_reward": 0.3,
                "mIoU": 0.4,
                "genotype_hash": "h",
                "encoding": json.dumps(to_encoding(arch)),
                "params": 1000,
                "child_s": 2.5,
            }
        )
        writer.writerow(
            {
                "child": 1,
                "status": "failed",
                "reward": 0.0,
                "genotype_hash": "f",
                "encoding": json.dumps(to_encoding(arch)),
                "params": 1000,
            }
        )
    rows = auxcell.rows_of(tmp_path / "search.csv", "extended")
    assert len(rows) == 1 and rows[0]["genes"] == genes and rows[0]["reward"] == 0.3
    assert rows[0]["stage1_reward"] == 0.2 and rows[0]["score_s"] == 2.5


def test_from_run_must_have_sampled_uniformly(tmp_path) -> None:
    (tmp_path / "search.csv").write_text("child\n")
    (tmp_path / "config.yaml").write_text("searcher:\n  name: auxcell\n  controller: {algorithm: ppo}\n")
    cfg = compose_config(
        "task=tabulate", "searcher=auxcell", f"run_dir={tmp_path / 'table'}", f"tabulate.from_run={tmp_path}"
    )
    with pytest.raises(ConfigError, match="uniformly"):
        pipeline.run(cfg)


# --- the Auto-DeepLab discrete space ---


def test_a_cell_reads_back_from_its_search_csv_text() -> None:
    from segnas.searchers.random.autodeeplab import describe_cell, parse_cell

    for seed in range(5):
        cell = get_space("autodeeplab").sample(np.random.default_rng(seed), 5, 4).arch["cell"]
        assert parse_cell(describe_cell(cell)) == cell
    with pytest.raises(ConfigError, match="not 'op"):
        parse_cell("sep_conv_3x3(0)")


def test_adl_decisions_are_one_hot_within_their_choices() -> None:
    from segnas.tables import autodeeplab as adl

    choices = adl.choices(5, 4)
    genes = np.array(
        [adl.genes_of(get_space("autodeeplab").sample(np.random.default_rng(s), 5, 4).arch) for s in range(50)]
    )
    assert genes.shape == (50, len(choices)) and np.all(genes < np.array(choices)) and np.all(genes >= 0)
    X = surrogate.features(genes, choices)
    assert np.all(X.sum(axis=1) == len(choices))
    # every value of the first block's first op and of every layer's stride level occurs
    assert set(genes[:, 0]) == set(range(choices[0])) and set(genes[:, -1]) <= set(range(4))


@pytest.fixture(scope="module")
def adl_table(tmp_path_factory):
    from tests.conftest import TINY_ADL

    run_dir = tmp_path_factory.mktemp("adl_table")
    overrides = [
        "task=tabulate",
        "searcher=autodeeplab",
        f"run_dir={run_dir}",
        *TINY_ADL,
        "tabulate.architectures=10",
        "tabulate.steps=2",
        "tabulate.surrogate_holdout=0.5",
    ]
    summary = pipeline.run(compose_config(*overrides))
    return run_dir, summary, overrides


def test_the_adl_table_holds_every_architecture_at_one_fidelity(adl_table) -> None:
    from segnas.tables import autodeeplab as adl

    run_dir, summary, _ = adl_table
    meta, rows = store.read(run_dir)
    assert summary["architectures"] == meta["architectures"] == len(rows) == 10
    assert {r["steps"] for r in rows} == {2} and meta["settings"]["steps"] == [2]
    assert len({r["genotype_hash"] for r in rows}) == 10
    labels = meta["settings"]["network"]
    for row in rows:  # each row's genes, genotype and hash describe one architecture
        genotype = get_space("autodeeplab").genotype({**row["genotype"], **labels})
        assert genotype.hash == row["genotype_hash"] and adl.genes_of(genotype.arch) == row["genes"]
    # the rows are random search's own records: the same held-out scores as its search.csv
    with (run_dir / "architectures" / "search.csv").open() as handle:
        recorded = {r["genotype_hash"]: float(r["holdout_mIoU"]) for r in csv.DictReader(handle)}
    assert {r["genotype_hash"]: r["holdout_mIoU"] for r in rows} == recorded
    assert meta["surrogate"]["n"] == 10 and meta["surrogate"]["folds"] == 2
    assert meta["holdout_mIoU"]["best"] == max(recorded.values())


def test_a_resumed_adl_table_adds_nothing_twice(adl_table) -> None:
    run_dir, _, overrides = adl_table
    before = (run_dir / "table.csv").read_text()
    pipeline.run(compose_config(*overrides, "resume=true"))
    assert (run_dir / "table.csv").read_text() == before


def test_an_adl_table_has_no_replay(adl_table, tmp_path) -> None:
    run_dir, _, _ = adl_table
    with pytest.raises(ConfigError, match="no replay"):
        pipeline.run(
            compose_config("task=replay", "searcher=autodeeplab", f"run_dir={tmp_path}", f"replay.table={run_dir}")
        )


def test_adl_rows_must_match_their_hash_and_run(adl_table, tmp_path) -> None:
    from segnas.tables import autodeeplab as adl

    run_dir, _, _ = adl_table
    with pytest.raises(ConfigError, match="network labels"):
        adl.rows_of(run_dir / "architectures" / "search.csv", {"filter_multiplier": 99})
    (tmp_path / "search.csv").write_text("sample\n")
    (tmp_path / "config.yaml").write_text("searcher:\n  name: autodeeplab\n")
    with pytest.raises(ConfigError, match="random search of the Auto-DeepLab space"):
        pipeline.run(
            compose_config(
                "task=tabulate",
                "searcher=autodeeplab",
                f"run_dir={tmp_path / 'table'}",
                f"tabulate.from_run={tmp_path}",
            )
        )


def test_the_adl_table_preset_tabulates_a_few_hundred_of_the_default_space() -> None:
    preset = compose_config("experiment=autodeeplab_table", "run_dir=/tmp/unused", tiny=False)
    default = compose_config("searcher=autodeeplab", "run_dir=/tmp/unused", tiny=False)
    assert preset.task == "tabulate" and preset.tabulate.architectures >= 300 and preset.tabulate.steps >= 1
    assert preset.searcher == default.searcher  # the space the default search decodes into


def test_the_shipped_auxcell_table_reads_and_its_surrogate_is_what_it_says() -> None:
    """benchmarks/results/tables/auxcell: 200 children of the default search (2026-12-02), so a
    replay needs no hours of training first; its recorded tau is the surrogate's refitted here."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "tables" / "auxcell"
    meta, rows = store.read(folder)
    assert meta["searcher"] == "auxcell" and len(rows) == meta["architectures"] == 200
    choices = decisions.choices(meta["settings"]["positions"])
    assert all(len(r["genes"]) == len(choices) and all(0 <= g < c for g, c in zip(r["genes"], choices)) for r in rows)
    _, fit = auxcell.fit_surrogate(rows, choices, 1.0 / meta["surrogate"]["folds"])
    assert fit["kendall_tau"] == pytest.approx(meta["surrogate"]["kendall_tau"])
