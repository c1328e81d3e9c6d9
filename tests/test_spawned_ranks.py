"""Spawned ranks own their tensors: under ``ddp_spawn`` on the CPU, torch.multiprocessing shares
the CPU tensors a search module holds outside its registered parameters between the ranks and
the launching process (the search tests run it end to end: tests/test_auxcell_ddp.py)."""

from __future__ import annotations

from torch import nn

from segnas.training.spawned import own_tensors


def test_own_tensors_copies_shared_storage_only() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    weight, bias_object = net[0].weight, net[0].bias
    net[0].weight.data.share_memory_()
    net[1].running_mean.share_memory_()
    assert own_tensors(net) == 2
    assert net[0].weight is weight and not weight.is_shared() and not net[1].running_mean.is_shared()
    assert net[0].bias is bias_object and own_tensors(net) == 0
