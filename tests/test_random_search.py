"""searcher=random and the search budget: uniform sampling of each space (chi-square against
the exhaustive list of what the space holds), the budget obeyed, genotypes the matching space
builds, resume."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from segnas import pipeline, spaces
from segnas.errors import ConfigError, GenotypeError
from segnas.nn.cell_ops import PRIMITIVES
from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.policy import Uniform
from segnas.searchers.budget import Budget
from segnas.searchers.fmas.encoding import Encoding
from segnas.searchers.fmas.nsga import SubnetProblem, UniformProposals
from segnas.settings import schema
from segnas.spaces.autodeeplab import STRIDES, AutoDeepLabSpace, count_paths
from tests.conftest import compose_config

#: Auto-DeepLab search settings of test_autodeeplab_search, under searcher.autodeeplab.
ADL = [
    f"searcher.autodeeplab.{key}"
    for key in (
        "layers=3",
        "filter_multiplier=2",
        "blocks=2",
        "epochs=2",
        "warmup_epochs=1",
        "val_images=4",
        "batches_per_epoch=null",
        "network.filter_multiplier=2",
        "network.aspp_channels=8",
        "network.decoder_channels=8",
        "network.low_level_channels=4",
    )
]
AUX = [
    f"searcher.auxcell.{key}"
    for key in (
        "children=3",
        "stage1.num_crops=8",
        "stage1.batch_size=4",
        "stage1.epochs=1",
        "stage2.max_batches=1",
        "reward.holdout_min=4",
    )
]


def random_cfg(run_dir: Path, space: str, *overrides: str):
    return compose_config(
        "task=search",
        "searcher=random",
        f"searcher.space={space}",
        f"run_dir={run_dir}",
        *(ADL if space == "autodeeplab" else AUX if space == "auxcell" else []),
        *overrides,
    )


def uniform(counts: Counter, categories: list) -> float:
    """p-value of the chi-square test that ``counts`` over ``categories`` are uniform."""
    assert set(counts) <= set(categories)
    return chisquare([counts.get(c, 0) for c in categories]).pvalue


def test_autodeeplab_space_samples_every_architecture_uniformly() -> None:
    """1 block, 2 layers: 49 op pairs × 5 paths = 245 architectures, each drawn ~40 times."""
    space, rng = AutoDeepLabSpace(), np.random.default_rng(0)
    ops = [op for op in PRIMITIVES if op != "none"]
    valid_paths = []
    for path in itertools.product(STRIDES, repeat=2):  # brute force: every stride sequence the space accepts
        try:
            space._check_path(list(path))
            valid_paths.append(tuple(path))
        except GenotypeError:
            pass
    categories = [(a, b, path) for a in ops for b in ops for path in valid_paths]
    draws = Counter()
    for _ in range(40 * len(categories)):
        arch = space.sample(rng, blocks=1, layers=2).arch
        (op_a, in_a), (op_b, in_b) = arch["cell"][0]
        assert (in_a, in_b) == (0, 1)
        draws[(op_a, op_b, tuple(arch["path"]))] += 1
    assert len(valid_paths) == 5 == count_paths(2)[0, 0]
    assert uniform(draws, categories) > 1e-3


def test_autodeeplab_paths_are_uniform_over_all_valid_paths() -> None:
    space, rng = AutoDeepLabSpace(), np.random.default_rng(1)
    valid = [p for p in itertools.product(STRIDES, repeat=4) if _valid(space, p)]
    assert len(valid) == count_paths(4)[0, 0] == 34  # after the stem at stride 4
    draws = Counter(tuple(space.sample(rng, blocks=1, layers=4).arch["path"]) for _ in range(30 * len(valid)))
    assert uniform(draws, valid) > 1e-3


def _valid(space: AutoDeepLabSpace, path) -> bool:
    try:
        space._check_path(list(path))
        return True
    except GenotypeError:
        return False


def test_autodeeplab_block_inputs_are_uniform_pairs() -> None:
    space, rng = AutoDeepLabSpace(), np.random.default_rng(2)
    pairs = Counter(tuple(s for _, s in space.sample(rng, blocks=3, layers=1).arch["cell"][2]) for _ in range(3000))
    assert uniform(pairs, list(itertools.combinations(range(4), 2))) > 1e-3


def test_auxcell_uniform_controller_draws_every_decision_uniformly() -> None:
    choices = decisions.choices()
    policy = Uniform(Controller(choices))
    generator = torch.Generator().manual_seed(0)
    draws = [policy.sample(generator) for _ in range(2200)]
    for step, size in enumerate(choices):
        assert uniform(Counter(actions[step] for actions, _, _ in draws), list(range(size))) > 1e-4, step
    first_op_and_conn = Counter((a[0], a[6]) for a, _, _ in draws)  # two decisions jointly
    assert uniform(first_op_and_conn, [(i, j) for i in range(choices[0]) for j in range(choices[6])]) > 1e-4
    actions, log_prob, entropy = draws[0]
    assert log_prob == pytest.approx(-sum(np.log(choices))) and entropy == pytest.approx(-log_prob)
    before = [p.clone() for p in policy.controller.parameters()]
    policy.update(actions, log_prob, 0.7)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.controller.parameters()))
    assert policy.baseline == 0.7


def test_fmas_uniform_proposals_cover_the_genes_uniformly() -> None:
    space = spaces.get_space("elastic-deeplabv3plus")
    encoding = Encoding(space, space.genotype({}), [0.25, 0.5, 0.75, 1.0], [0.5, 1.0])
    proposals = UniformProposals(SubnetProblem(encoding.xl, encoding.xu, 2), pop_size=50, seed=0)
    X = np.concatenate([proposals.ask().get("X") for _ in range(40)])
    assert X.shape == (2000, encoding.n_var)
    for gene in range(encoding.n_var):
        values = list(range(int(encoding.xl[gene]), int(encoding.xu[gene]) + 1))
        assert uniform(Counter(X[:, gene].tolist()), values) > 1e-4, gene
    for x in X[:20]:
        space.build(encoding.decode(x), 5)  # every proposal is a buildable genotype


def test_budget_reads_config_and_names_what_was_spent() -> None:
    def from_config(*overrides: str) -> Budget:
        settings = schema.load(compose_config("run_dir=/tmp/x", *overrides)).budget
        return Budget(settings.wall_time_s, settings.images)

    assert not from_config().limited
    budget = from_config("budget.wall_time_s=10", "budget.images=100")
    assert budget.exhausted(9.9, 99) is None
    assert "budget.images=100" in budget.exhausted(1.0, 100)
    assert "budget.wall_time_s=10" in budget.exhausted(10.0, 0)
    with pytest.raises(ConfigError, match="budget.images"):
        from_config("budget.images=-3")


def test_random_autodeeplab_trains_samples_and_retrains_the_best(tmp_path: Path) -> None:
    summary = pipeline.run(random_cfg(tmp_path / "run", "autodeeplab", "searcher.samples=2", "retrain.epochs=1"))
    # train 16 images, halves of 8 at batch 4: 2 batches per epoch; 2 weight + 1 architecture epoch
    assert summary["search_matched_steps"] == 6 and summary["search_steps"] == 6
    assert summary["search_steps_per_sample"] == 3 and summary["search_images_seen"] == 24
    rows = (tmp_path / "run" / "search.csv").read_text().splitlines()
    assert len(rows) == 3
    best = max(rows[1:], key=lambda row: float(row.split(",")[-2]))
    assert summary["genotype_hash"] == best.split(",")[1] and summary["search_random_space"] == "autodeeplab"
    genotype = spaces.resolve_arch(str(tmp_path / "run" / "genotype.yaml"))
    assert genotype.space == "autodeeplab" and len(genotype.arch["path"]) == 3
    assert summary["val_mIoU"] is not None


def test_random_autodeeplab_trains_on_train_a_and_selects_on_train_b_never_val(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 13, item 7: the baseline picked its top-k on val, the split its result is reported on
    from hydra.utils import instantiate

    import segnas.searchers.random.autodeeplab as random_adl

    seen: dict[str, list] = {"scored": [], "trained": []}
    score, loader = random_adl._score, random_adl.epoch_seeded_loader

    def spy_score(net, batches, *args):
        seen["scored"].append((batches.dataset.source, list(batches.dataset.indices)))
        return score(net, batches, *args)

    def spy_loader(dataset, *args, **kwargs):
        seen["trained"].append((dataset.source, list(dataset.indices)))
        return loader(dataset, *args, **kwargs)

    monkeypatch.setattr(random_adl, "_score", spy_score)
    monkeypatch.setattr(random_adl, "epoch_seeded_loader", spy_loader)
    cfg = random_cfg(tmp_path / "run", "autodeeplab", "searcher.samples=2", "retrain.epochs=0")
    summary = pipeline.run(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    half_a, half_b = datamodule.train_halves()
    assert len(seen["scored"]) == len(seen["trained"]) == 2
    for source, indices in seen["scored"]:
        assert source.split == "train" and indices == list(half_b.indices)[:4]  # val_images=4 of trainB
    for source, indices in seen["trained"]:
        assert source.split == "train" and indices == list(half_a.indices)
    assert "never val" in summary["search_selection_split"]
    header, *rows = (tmp_path / "run" / "search.csv").read_text().splitlines()
    assert "holdout_mIoU" in header.split(",") and "val_mIoU" not in header.split(",")


def test_random_autodeeplab_obeys_the_image_budget_and_resumes(tmp_path: Path) -> None:
    summary = pipeline.run(
        random_cfg(tmp_path / "b", "autodeeplab", "searcher.samples=3", "retrain.epochs=0", "budget.images=16")
    )
    # the budget's 4 steps (16 images at batch 4) instead of the matched 6, shared by 3 samples
    assert summary["search_steps_per_sample"] == 1 and summary["search_images_seen"] == 12
    straight = pipeline.run(random_cfg(tmp_path / "s", "autodeeplab", "searcher.samples=3", "retrain.epochs=0"))
    first = pipeline.run(
        random_cfg(tmp_path / "f", "autodeeplab", "searcher.samples=3", "retrain.epochs=0", "budget.wall_time_s=0.001")
    )
    assert first["search_samples"] == 1 and "budget.wall_time_s" in first["search_budget_exhausted"]
    resumed = pipeline.run(
        random_cfg(
            tmp_path / "r",
            "autodeeplab",
            "searcher.samples=3",
            "retrain.epochs=0",
            f"resume={tmp_path / 'f' / 'last.ckpt'}",
        )
    )
    assert [r.split(",")[1] for r in (tmp_path / "r" / "search.csv").read_text().splitlines()[1:]] == [
        r.split(",")[1] for r in (tmp_path / "s" / "search.csv").read_text().splitlines()[1:]
    ]
    assert resumed["search_samples"] == straight["search_samples"] == 3


def test_random_autodeeplab_on_two_spawned_ranks_is_the_one_process_search(tmp_path: Path) -> None:
    """Each rank trains its own architecture of every unit; a sample's batches and initial
    weights depend on its index alone, so the table is the one-process table."""
    import csv

    import torch

    torch.set_num_threads(1)  # the ranks' thread count
    tables = {}
    for name, extra in (("alone", []), ("ddp", ["trainer=ddp_spawn", "trainer.devices=2"])):
        summary = pipeline.run(
            random_cfg(tmp_path / name, "autodeeplab", "searcher.samples=3", "retrain.epochs=0", *extra)
        )
        with open(tmp_path / name / "search.csv") as handle:
            tables[name] = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
        assert summary["search_ranks"] == (2 if extra else 1)
    assert tables["ddp"] == tables["alone"] and len(tables["alone"]) == 3


def test_random_auxcell_runs_the_child_loop_with_a_uniform_controller(tmp_path: Path) -> None:
    summary = pipeline.run(random_cfg(tmp_path / "run", "auxcell", "retrain.epochs=0", "budget.images=1"))
    assert summary["search_children"] == 1 and "budget.images=1" in summary["search_budget_exhausted"]
    assert summary["search_controller_algorithm"] == "uniform" and summary["space"] == "auxcell"
    spaces.build(spaces.resolve_arch(str(tmp_path / "run" / "genotype.yaml")), 5)


def test_random_fmas_scores_uniform_proposals(supernet_file: Path, tmp_path: Path) -> None:
    summary = pipeline.run(
        random_cfg(
            tmp_path / "run",
            "fmas",
            f"searcher.fmas.supernet={supernet_file}",
            "searcher.fmas.pop_size=4",
            "searcher.fmas.generations=3",
            "searcher.fmas.val_images=4",
            "searcher.fmas.calib_images=4",
            "searcher.fmas.top_k=1",
            "retrain.epochs=0",
            "budget.images=1",
        )
    )
    assert summary["search_algorithm"] == "random" and summary["generations"] == 1  # the first always runs
    assert "budget.images=1" in summary["search_budget_exhausted"] and summary["space"] == "elastic-deeplabv3plus"


def test_autodeeplab_search_stops_when_the_budget_is_spent(tmp_path: Path) -> None:
    cfg = compose_config(
        "task=search",
        "searcher=autodeeplab",
        f"run_dir={tmp_path}",
        "retrain.epochs=0",
        "budget.images=8",
        *(o.replace("searcher.autodeeplab.", "searcher.") for o in ADL),
    )
    summary = pipeline.run(cfg)
    assert summary["search_weight_steps"] == 2 and summary["search_images_seen"] == 8  # of 4 + 2 steps
    assert "budget.images=8" in summary["search_budget_exhausted"]
