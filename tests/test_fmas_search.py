"""FMAS search parts: the front against pymoo's own sort, hypervolume, the cache, constraints
checked before scoring, and resume continuing the same generation sequence."""

from __future__ import annotations

import csv
import itertools
import json
import logging

import numpy as np
import pytest
import torch
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from segnas import spaces
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.searchers.engine import STATE_KEY
from segnas.searchers.fmas.evaluator import Evaluator
from segnas.searchers.fmas.pareto import hypervolume, non_dominated, pick
from segnas.searchers.fmas.scoring import Scorer
from segnas.searchers.fmas.settings import ConstraintSettings
from tests.conftest import compose_config, run_search

SEARCH = [
    "searcher=fmas",
    "searcher.pop_size=4",
    "searcher.val_images=4",
    "searcher.calib_images=4",
    "data.eval_batch_size=2",
]


def cfg_for(run_dir, supernet_file, *overrides):
    return compose_config(f"run_dir={run_dir}", *SEARCH, f"searcher.supernet={supernet_file}", *overrides)


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_agrees_with_pymoo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    F = rng.integers(0, 6, size=(40, 2 + seed % 2)).astype(float)  # many ties
    ours = set(non_dominated(F).tolist())
    theirs = set(NonDominatedSorting().do(F, only_non_dominated_front=True).tolist())
    assert ours == theirs


def test_hypervolume_of_two_points() -> None:
    F = np.array([[0.2, 0.6], [0.5, 0.3], [1.5, 0.1]])  # the last lies outside the reference box
    assert hypervolume(F, [1.0, 1.0]) == pytest.approx(0.8 * 0.4 + 0.5 * 0.7 - 0.5 * 0.4)


def test_pick_spreads_along_the_front() -> None:
    front = [{"i": i} for i in range(7)]
    assert [r["i"] for r in pick(front, 3)] == [0, 3, 6]
    assert len(pick(front, 10)) == 7


def test_a_genotype_is_scored_once_and_limits_are_checked_first(supernet_file) -> None:
    from segnas.training import load_network

    _, _, net = load_network(supernet_file)
    calls = []

    class CountingScorer(Scorer):
        def score(self, net):
            calls.append(1)
            return {"miou": 0.5, "pixel_acc": 0.5}

    image = {"image": torch.randn(2, 3, 32, 32), "mask": torch.zeros(2, 32, 32, dtype=torch.long)}
    space = spaces.get_space("elastic-deeplabv3plus")
    small = space.genotype(
        {"depths": [1] * 6, "widths": [0.25] * 6, "aspp_rates": [], "aspp_channels": 64, "decoder_channels": 64}
    )
    full = space.genotype({})
    evaluator = Evaluator(net, CountingScorer([image], [image], 5), ["miou", "macs"], ConstraintSettings(), (32, 32))
    limit = (evaluator.evaluate(small)["macs"] + evaluator.evaluate(full)["macs"]) / 2
    assert evaluator.evaluate(Genotype(small.space, dict(small.arch)))["miou"] == 0.5
    assert len(calls) == 2 and evaluator.hits == 1
    limited = Evaluator(
        net, CountingScorer([image], [image], 5), ["miou", "macs"], ConstraintSettings(max_macs=limit), (32, 32)
    )
    rejected = limited.evaluate(full)
    assert not rejected["feasible"] and rejected["miou"] is None and rejected["violation"] > 0
    assert limited.evaluate(small)["feasible"] and len(calls) == 3


def search_state(run_dir):
    """The FMAS state the search's Lightning checkpoint carries."""
    return torch.load(run_dir / "last.ckpt", weights_only=False)[STATE_KEY]["search"]


def without_times(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_search_writes_a_front_that_pymoo_agrees_with(supernet_file, tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = run_search(cfg_for(run_dir, supernet_file, "searcher.generations=2"))
    state = search_state(run_dir)
    records = [r for r in state["cache"].values() if r["feasible"]]
    F = np.array([[1 - r["miou"], r["macs"]] for r in records])
    expected = {records[i]["genotype_hash"] for i in NonDominatedSorting().do(F, only_non_dominated_front=True)}
    rows = read_csv(run_dir / "pareto.csv")
    assert {row["genotype_hash"] for row in rows} == expected
    G = np.array([[1 - float(row["miou"]), float(row["macs"])] for row in rows])
    assert len(non_dominated(G)) == len(G)
    assert all(row["finetuned"] == "False" for row in rows)
    # no genotype scored twice: every scoring left exactly one cache entry
    assert result.summary["candidates_scored"] == len(records) == len(state["cache"])
    history = read_csv(run_dir / "search.csv")
    assert [int(r["generation"]) for r in history] == [1, 2]
    hv = [float(r["hypervolume"]) for r in history]
    assert hv[0] > 0 and hv[1] >= hv[0]
    fronts = read_csv(run_dir / "fronts.csv")  # each generation's front; the last one is pareto.csv's
    assert [int(h["front_size"]) for h in history] == [sum(f["generation"] == g for f in fronts) for g in "12"]
    assert {f["genotype_hash"] for f in fronts if f["generation"] == "2"} == expected
    # searcher.top_k=null (the paper's): the whole front goes on to fine-tuning, best mIoU first
    assert {c.genotype.hash for c in result.candidates} == expected
    assert result.candidates[0].scores["miou"] == max(float(r["miou"]) for r in rows)
    assert (run_dir / "pareto.png").stat().st_size > 1000
    assert all(json.loads(row["genotype"])["backbone"] == "mobilenetv2_100" for row in rows)


def test_resume_continues_the_same_generation_sequence(supernet_file, tmp_path) -> None:
    straight = tmp_path / "straight"
    run_search(cfg_for(straight, supernet_file, "searcher.generations=3"))
    first = tmp_path / "first"
    run_search(cfg_for(first, supernet_file, "searcher.generations=2"))
    resumed = tmp_path / "resumed"
    run_search(cfg_for(resumed, supernet_file, "searcher.generations=3", f"resume={first}"), resume=first / "last.ckpt")
    a, b = search_state(straight), search_state(resumed)
    assert b["generation"] == 3
    assert without_times(a["history"]) == without_times(b["history"])
    assert list(a["cache"]) == list(b["cache"])
    assert (straight / "pareto.csv").read_text() == (resumed / "pareto.csv").read_text()
    assert len(read_csv(resumed / "search.csv")) == 3


def test_resume_refuses_a_foreign_checkpoint(supernet_file, tmp_path) -> None:
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ConfigError, match="not an FMAS search checkpoint"):
        run_search(cfg_for(tmp_path / "run", supernet_file), resume=other)


def test_generation_rows_reach_the_log_csv_and_wandb(supernet_file, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    run_dir = tmp_path / "run"
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="segnas-test")
    try:
        with caplog.at_level(logging.INFO, logger="segnas"):
            run_search(cfg_for(run_dir, supernet_file, "searcher.generations=2"), logger=logger)
        summary = dict(logger.experiment.summary)
    finally:
        wandb.finish()
    rows = read_csv(run_dir / "search.csv")
    assert summary["search/hypervolume"] == pytest.approx(float(rows[-1]["hypervolume"]))
    assert summary["search/front_size"] == int(rows[-1]["front_size"]) and "search/front" in summary
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("generation ")]
    assert len(lines) == 2
    for line, row in zip(lines, rows):
        assert line.startswith(
            f"generation {row['generation']}/2: hypervolume {float(row['hypervolume']):.4f}, "
            f"front {row['front_size']}, best mIoU {float(row['best_miou']):.4f}, scored "
            f"{row['scored']} of {row['proposed']} proposed ({row['scored_total']} in all), "
            f"{row['infeasible']} infeasible, {row['cache_hits']} cache hits, "
        ), line


def test_encoding_bounds_decode_to_the_full_and_the_smallest_network() -> None:
    from segnas.searchers.fmas.encoding import Encoding

    space = spaces.get_space("elastic-deeplabv3plus")
    full = space.genotype({})
    encoding = Encoding(space, full, [1.0, 0.5, 0.25], [0.25, 1.0])
    # stage 6 has one block: its depth gene has one choice and is left out
    assert encoding.n_var == 5 + 6 + 3 + 2
    assert encoding.decode(encoding.xu).hash == full.hash
    smallest = encoding.decode(encoding.xl).arch
    assert smallest["depths"] == [1] * 6 and smallest["widths"] == [0.25] * 6
    assert smallest["aspp_rates"] == [] and smallest["aspp_channels"] == 64 and smallest["decoder_channels"] == 64


class ToyEvaluator:
    """A cheap stand-in for the Evaluator: accuracy concave in the genes, cost linear in them, so
    the front has a known shape and NSGA-II has something to push out."""

    def __init__(self) -> None:
        self.cache, self.hits, self.scored = {}, 0, 0

    def evaluate_many(self, genotypes):
        records = []
        for genotype in genotypes:
            if genotype.hash not in self.cache:
                arch = genotype.arch
                kept = np.array(arch["depths"]) / np.array([2, 3, 4, 3, 3, 1]) * np.array(arch["widths"])
                head = arch["aspp_channels"] / 256
                self.cache[genotype.hash] = {
                    "genotype_hash": genotype.hash,
                    "genotype": arch,
                    "feasible": True,
                    "violation": 0.0,
                    "miou": float(np.sqrt(kept).mean() * 0.5 + 0.3 * head**0.3),
                    "macs": float(kept.sum() + head + 2 * arch["decoder_channels"] / 256 + len(arch["aspp_rates"])),
                }
                self.scored += 1
            else:
                self.hits += 1
            records.append(self.cache[genotype.hash])
        return records


def test_nsga2_beats_random_sampling_on_a_toy_problem() -> None:
    """The ask/tell wiring works: at the same number of distinct candidates, NSGA-II's front has
    a larger hypervolume than random sampling's, and its hypervolume never decreases."""
    from segnas.searchers.fmas.encoding import Encoding
    from segnas.searchers.fmas.nsga import SearchState, build_algorithm, run_generation
    from segnas.searchers.fmas.pareto import front_records, objective_matrix

    space = spaces.get_space("elastic-deeplabv3plus")
    encoding = Encoding(space, space.genotype({}), [0.25, 0.5, 0.75, 1.0], [0.25, 0.5, 0.75, 1.0])
    objectives, scale, reference = ["miou", "macs"], {"macs": 12.0}, [1.0, 1.1]
    nsga, rand = [], []
    for seed in range(3):
        state, toy = SearchState(build_algorithm(encoding, 2, 8, 100, seed)), ToyEvaluator()
        for _ in range(12):
            run_generation(state, encoding, toy, objectives, scale, reference)
        rows = [row["hypervolume"] for row in state.history]
        assert all(a <= b for a, b in itertools.pairwise(rows))
        nsga.append(rows[-1])
        toy, rng = ToyEvaluator(), np.random.default_rng(seed)
        while toy.scored < state.scored:
            toy.evaluate_many([encoding.decode(rng.integers(encoding.xl, encoding.xu + 1))])
        front = front_records(list(toy.cache.values()), objectives, scale)
        rand.append(hypervolume(objective_matrix(front, objectives, scale), reference))
    assert np.mean(nsga) > np.mean(rand) + 0.01, (nsga, rand)


def default_encoding():
    from segnas.searchers.fmas.encoding import Encoding

    space = spaces.get_space("elastic-deeplabv3plus")
    return Encoding(space, space.genotype({}), [0.25, 0.5, 0.75, 1.0], [0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("mutation_prob", [None, 0.3])
def test_mutation_changes_the_configured_fraction_of_genes_to_other_values(mutation_prob) -> None:
    """searcher.mutation_prob is per gene (null = 1 / genes): over 2000 offspring the changed
    genes are binomial with that probability (scipy's exact test), and a changed gene takes each
    of its other values equally often (chi-square)."""
    from pymoo.core.population import Population
    from scipy.stats import binomtest, chisquare

    from segnas.searchers.fmas.nsga import SubnetProblem, build_algorithm

    encoding = default_encoding()
    mutation = build_algorithm(encoding, 2, 8, 10, 0, mutation_prob=mutation_prob).mating.mutation
    X = np.random.default_rng(0).integers(encoding.xl, encoding.xu + 1, size=(2000, encoding.n_var))
    Y = mutation.do(
        SubnetProblem(encoding.xl, encoding.xu, 2), Population.new("X", X.copy()), random_state=np.random.default_rng(1)
    ).get("X")
    assert np.issubdtype(Y.dtype, np.integer) and np.all((Y >= encoding.xl) & (Y <= encoding.xu))
    changed = Y != X
    expected = 1 / encoding.n_var if mutation_prob is None else mutation_prob
    assert binomtest(int(changed.sum()), changed.size, expected).pvalue > 1e-3, changed.mean()
    four = [g for g in range(encoding.n_var) if encoding.xu[g] == 3]  # the genes with 4 values
    moved = [(X[i, g], Y[i, g]) for i, g in zip(*np.nonzero(changed)) if g in four]
    for value in range(4):
        counts = np.bincount([new for old, new in moved if old == value], minlength=4)
        assert counts[value] == 0 and chisquare(np.delete(counts, value)).pvalue > 1e-3, (value, counts)


def gene_values(encoding, arch) -> list:
    """The choice every gene of ``encoding`` has in ``arch`` (the inverse of its decode)."""
    values = []
    for gene in encoding.genes:
        if gene.label in ("depths", "widths"):
            values.append(arch[gene.label][gene.index])
        elif gene.label == "aspp_rate":
            values.append(int(gene.index in arch["aspp_rates"]))
        else:
            values.append(arch[gene.label])
    return values


@pytest.mark.parametrize("seed", range(3))
def test_a_value_missing_from_the_population_comes_back(seed: int) -> None:
    """The first population lacks the top value of every gene (the full depth, width 1.0, every
    ASPP branch kept, full head widths); NSGA-II proposes each of them again within 25
    generations of 8 (about 1 in 48 offspring for a given value of a 4-valued gene)."""
    from pymoo.core.evaluator import Evaluator as PymooEvaluator
    from pymoo.problems.static import StaticProblem

    from segnas.searchers.fmas.nsga import SearchState, build_algorithm, run_generation
    from segnas.searchers.fmas.pareto import objective_matrix

    encoding = default_encoding()
    objectives, scale, reference = ["miou", "macs"], {"macs": 12.0}, [1.0, 1.1]
    state, toy = SearchState(build_algorithm(encoding, 2, 8, 100, seed)), ToyEvaluator()
    first = state.algorithm.ask()
    first.set("X", np.minimum(first.get("X"), encoding.xu - 1))
    records = toy.evaluate_many([encoding.decode(x) for x in first.get("X")])
    PymooEvaluator().eval(
        StaticProblem(
            state.algorithm.problem, F=objective_matrix(records, objectives, scale), G=np.zeros((len(records), 1))
        ),
        first,
    )
    state.algorithm.tell(infills=first)
    seen = {i: {gene_values(encoding, r["genotype"])[i] for r in records} for i in range(encoding.n_var)}
    assert all(gene.choices[-1] not in seen[i] for i, gene in enumerate(encoding.genes))
    state.cache = dict(toy.cache)
    for _ in range(25):
        run_generation(state, encoding, toy, objectives, scale, reference)
    proposed = [gene_values(encoding, r["genotype"]) for r in state.cache.values()]
    missing = [
        (gene.label, gene.index, choice)
        for i, gene in enumerate(encoding.genes)
        for choice in gene.choices
        if choice not in {values[i] for values in proposed}
    ]
    assert not missing


# --- DDP: trainer=ddp splits the scoring between ranks; trainer=ddp_spawn searches in the main process ---

DDP_SEARCH = [*SEARCH, "searcher.generations=2", "searcher.top_k=1", "searcher.retrain_epochs=1"]


@pytest.mark.slow
def test_trainer_ddp_splits_the_scoring_between_two_cpu_ranks(supernet_file, tmp_path) -> None:
    """The whole command under trainer=ddp (Lightning relaunches it for rank 1, so it runs as a
    subprocess). With a given supernet no Trainer fits before the search: the ranks must join
    before it, score half of each generation each, and rank 0 alone writes the files."""
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
            *ddp,
            *DDP_SEARCH,
            f"searcher.supernet={supernet_file}",
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
    state = search_state(run_dir)
    ranks = [record["scored_by_rank"] for record in state["cache"].values()]
    assert sorted(set(ranks)) == [0, 1] and abs(ranks.count(0) - ranks.count(1)) <= state["generation"]
    assert [int(row["generation"]) for row in read_csv(run_dir / "search.csv")] == [1, 2]  # one writer
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["candidates_scored"] == len(state["cache"]) == state["scored"]
    rows = read_csv(run_dir / "pareto.csv")
    assert len({row["genotype_hash"] for row in rows}) == len(rows) == summary["front_size"]


def test_ddp_spawn_ranks_split_the_scoring_and_reproduce_one_process(supernet_file, tmp_path) -> None:
    """trainer=ddp_spawn: the Trainer's 2 spawned CPU ranks score half of each generation each
    (the search module checks after every generation that their populations are bitwise equal),
    and the search is the one a single process runs: rows, records and the pymoo population."""
    from segnas.searchers.fmas.nsga import SearchState

    torch.set_num_threads(1)  # the ranks' kernels: untrained networks' near-tied logits flip otherwise
    spawned, alone = tmp_path / "spawned", tmp_path / "alone"
    result = run_search(
        cfg_for(spawned, supernet_file, *DDP_SEARCH[len(SEARCH) :], "trainer=ddp_spawn", "trainer.devices=2")
    )
    run_search(cfg_for(alone, supernet_file, *DDP_SEARCH[len(SEARCH) :]))
    a, b = search_state(spawned), search_state(alone)
    assert {record["scored_by_rank"] for record in a["cache"].values()} == {0, 1}
    assert without_times(read_csv(spawned / "search.csv")) == without_times(read_csv(alone / "search.csv"))
    assert list(a["cache"]) == list(b["cache"])
    for mine, theirs in zip(a["cache"].values(), b["cache"].values()):
        assert {k: v for k, v in mine.items() if k != "scored_by_rank"} == {
            k: v for k, v in theirs.items() if k != "scored_by_rank"
        }
    pa, pb = SearchState.from_dict(a).population(), SearchState.from_dict(b).population()
    assert np.array_equal(pa["X"], pb["X"]) and np.array_equal(pa["F"], pb["F"]) and pa["rng"] == pb["rng"]
    assert result.summary["search_ranks"] == 2 and result.summary["front_size"] == len(read_csv(spawned / "pareto.csv"))


def test_progress_rows_follow_the_generations_and_survive_a_resume(supernet_file, tmp_path) -> None:
    first = tmp_path / "first"
    run_search(cfg_for(first, supernet_file, "searcher.generations=2"))
    resumed = tmp_path / "resumed"
    run_search(cfg_for(resumed, supernet_file, "searcher.generations=3", f"resume={first}"), resume=first / "last.ckpt")
    progress, generations = read_csv(resumed / "progress.csv"), read_csv(resumed / "search.csv")
    assert [int(r["unit"]) for r in progress] == [0, 1, 2]
    assert [float(r["best_score"]) for r in progress] == [float(r["best_miou"]) for r in generations]
    assert read_csv(first / "progress.csv") == progress[:2]
