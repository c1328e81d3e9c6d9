"""Population scoring split across 2 CPU processes (gloo): each rank scores half of the new
sub-networks and every rank ends with the records a single process computes; what rank 0
measured alone reaches every rank. The whole command under trainer=ddp and trainer=ddp_spawn is
run in tests/test_fmas_search.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segnas import spaces
from segnas.searchers.distributed import from_rank_zero
from segnas.searchers.fmas.evaluator import Evaluator
from segnas.searchers.fmas.scoring import Scorer
from segnas.searchers.fmas.settings import ConstraintSettings
from segnas.training import load_network


def arches() -> list[dict]:
    return [
        {
            "depths": [1 + i % 2, 1, 1 + i % 3, 1, 1, 1],
            "widths": [0.25 * (1 + i % 4)] * 6,
            "aspp_rates": [6] if i % 2 else [],
            "aspp_channels": 64,
            "decoder_channels": 32 * (1 + i % 2),
        }
        for i in range(6)
    ]


def evaluate(supernet: Path) -> tuple[list[dict], int]:
    """Score the six genotypes (and one repeat) as this process sees the world."""
    _, _, net = load_network(supernet)
    generator = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.randn(2, 3, 32, 32, generator=generator),
            "mask": torch.randint(0, 5, (2, 32, 32), generator=generator),
        }
    ]
    space = spaces.get_space("elastic-deeplabv3plus")
    genotypes = [space.genotype(a) for a in arches()]
    evaluator = Evaluator(net, Scorer(batches, batches, 5), ["miou", "macs"], ConstraintSettings(), (32, 32))
    calls = []
    score = evaluator.scorer.score
    evaluator.scorer.score = lambda n: calls.append(1) or score(n)
    records = evaluator.evaluate_many([*genotypes, genotypes[0]])
    assert evaluator.hits == 1 and evaluator.scored == len(genotypes)
    return records, len(calls)


def worker(rank: int, world: int, init: str, supernet: Path, out: Path) -> None:
    """Rank 0 first scores everything alone (the reference, computed with the same kernels and
    threads: an untrained network's near-tied logits flip under other thread setups)."""
    torch.set_num_threads(1)
    if rank == 0:
        torch.save(evaluate(supernet), out / "alone.pt")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.save(evaluate(supernet), out / f"rank{rank}.pt")
        torch.save(from_rank_zero({"measured_on": rank}), out / f"broadcast{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_split_the_population_and_agree(supernet_file: Path, tmp_path: Path) -> None:
    mp.spawn(worker, args=(2, f"file://{tmp_path / 'rendezvous'}", supernet_file, tmp_path), nprocs=2, join=True)
    single, single_calls = torch.load(tmp_path / "alone.pt", weights_only=False)
    assert single_calls == 6
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [calls for _, calls in results] == [3, 3]
    for records, _ in results:
        assert [r["genotype_hash"] for r in records] == [r["genotype_hash"] for r in single]
        # new genotypes dealt round-robin; the repeat of the first is a cache hit
        assert [r["scored_by_rank"] for r in records] == [0, 1, 0, 1, 0, 1, 0]
        for mine, reference in zip(records, single):
            assert mine["macs"] == reference["macs"] and mine["params"] == reference["params"]
            assert mine["miou"] == pytest.approx(reference["miou"], abs=1e-9)
    assert [torch.load(tmp_path / f"broadcast{r}.pt") for r in range(2)] == [{"measured_on": 0}] * 2
