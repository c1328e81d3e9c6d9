"""Which process does what when a search is split across ranks, and on which device.

FMAS and auxcell split their work the same way under the Trainer's DDP strategy
(:func:`segnas.searchers.engine.search_strategy`): every rank holds the same search state, does
its share of the expensive units (sub-networks to score, children to train), and the results are
all-gathered (:func:`all_gather`) so the state stays identical everywhere. What a rank would
otherwise decide on its own clock goes through :func:`from_rank_zero`. Without a process group
every helper reduces to the single-process case.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from segnas.errors import ConfigError

T = TypeVar("T")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank_zero(value: T) -> T:
    """Rank 0's ``value`` on every rank (``value`` itself without a process group).

    For what each rank would otherwise measure on its own (a latency that scales FMAS's
    objectives; the wall clock that decides when the budget is spent): every rank must hold the
    same search state and stop at the same step, or the all-gathers pair up different steps or
    wait forever.
    """
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` alone)."""
    world = rank_and_world()[1]
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def one_per_host(work: Callable[[], T]) -> T:
    """``work()`` on every rank, never on two ranks of one host at the same time.

    For latency measurement: ranks that share a host share its cores (and memory bandwidth), so
    timing on them concurrently measures the contention, not the network. Ranks of one host
    (same host name) take turns in rank order, each turn closed by a barrier; ranks on different
    hosts measure in the same turn. Every rank must call it at the same point (a collective),
    with or without work of its own.
    """
    rank, world = rank_and_world()
    if world == 1:
        return work()
    hosts = all_gather(socket.gethostname())
    mine = hosts[:rank].count(hosts[rank])
    result: Any = None
    for turn in range(max(hosts.count(host) for host in hosts)):
        if turn == mine:
            result = work()
        dist.barrier()
    return result


def search_device(name: str, key: str = "searcher.device") -> torch.device:
    """``auto``: this process's CUDA device (each DDP rank has its own) when there is one, else
    the CPU; or an explicit ``cpu`` / ``cuda[:N]``."""
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name}: CUDA is not available here; use auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{key}={name}: expected auto, cpu or cuda[:N] ({err})") from None
