"""Latency measured with repeats, their spread kept with every record, and never timed by two
ranks of one host at once (issue 13, item 19)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from segnas.errors import ConfigError
from segnas.hardware.latency import LatencyTarget, TorchLatency
from segnas.searchers.distributed import one_per_host
from segnas.searchers.fmas.module import reference_costs


def test_the_latency_is_the_median_of_the_repeats_medians_and_their_range_is_kept(monkeypatch) -> None:
    import segnas.hardware.latency as latency

    durations = iter([5, 1, 3, 9, 9, 9, 2, 2, 100])  # ms, three groups of three: medians 3, 9, 2
    clock = [0.0]

    def step() -> None:  # a step moves the (fake) clock on by its duration
        clock[0] += next(durations) / 1000.0

    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])
    target = LatencyTarget("stub", runs=3, repeats=3, warmup=0)
    medians = target._time(step)
    assert medians == pytest.approx([3.0, 9.0, 2.0])
    record = target._result(medians, "cpu")
    assert record["latency_ms"] == pytest.approx(3.0)
    assert record["latency_spread_ms"] == pytest.approx(7.0)
    assert record["latency_repeat_ms"] == pytest.approx([3.0, 9.0, 2.0]) and record["latency_repeats"] == 3


def test_a_measured_target_times_every_repeat_of_a_network() -> None:
    record = TorchLatency(threads=1, warmup=1, runs=2, repeats=4).measure(nn.Conv2d(3, 4, 3), (16, 16))
    assert len(record["latency_repeat_ms"]) == 4
    assert record["latency_ms"] == pytest.approx(statistics.median(record["latency_repeat_ms"]), abs=1e-3)
    assert record["latency_spread_ms"] == pytest.approx(
        max(record["latency_repeat_ms"]) - min(record["latency_repeat_ms"]), abs=1e-3
    )


def test_zero_repeats_is_refused_naming_the_target() -> None:
    with pytest.raises(ConfigError, match="hardware=cpu.*repeats"):
        TorchLatency(name="cpu", repeats=0)


def test_the_reference_network_is_measured_with_the_same_repeats() -> None:
    costs = reference_costs(
        nn.Conv2d(3, 4, 3), ["miou", "latency"], (16, 16), TorchLatency(threads=1, warmup=0, runs=2, repeats=3)
    )
    reference = costs["reference_latency"]
    assert costs["scale"]["latency"] == reference["latency_ms"]
    assert len(reference["latency_repeat_ms"]) == 3 and reference["latency_spread_ms"] >= 0
    assert reference["latency_estimated"] is False


def _timed_turns(rank: int, world: int, init: str, out: Path, hosts: list[str]) -> None:
    import socket

    socket.gethostname = lambda: hosts[rank]  # what one_per_host reads to group ranks by host
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:

        def work() -> tuple[float, float]:
            start = time.monotonic()
            time.sleep(0.4)
            return start, time.monotonic()

        interval = one_per_host(work)
        (out / f"rank{rank}.json").write_text(json.dumps(interval))
    finally:
        dist.destroy_process_group()


def _intervals(tmp_path: Path, hosts: list[str]) -> list[tuple[float, float]]:
    mp.spawn(
        _timed_turns,
        args=(len(hosts), f"file://{tmp_path / 'rendezvous'}", tmp_path, hosts),
        nprocs=len(hosts),
        join=True,
    )
    return [tuple(json.loads((tmp_path / f"rank{r}.json").read_text())) for r in range(len(hosts))]


def test_ranks_of_one_host_time_in_turns(tmp_path: Path) -> None:
    (a_start, a_end), (b_start, b_end) = _intervals(tmp_path, ["node0", "node0"])
    assert a_end <= b_start  # rank 0's turn is over before rank 1's starts (time.monotonic is machine-wide)


def test_ranks_of_different_hosts_time_in_the_same_turn(tmp_path: Path) -> None:
    (a_start, a_end), (b_start, b_end) = _intervals(tmp_path, ["node0", "node1"])
    assert max(a_start, b_start) < min(a_end, b_end)  # their intervals overlap


def test_one_process_just_works() -> None:
    assert one_per_host(lambda: 7) == 7
    assert torch.distributed.is_initialized() is False
