"""The Auto-DeepLab supernet's α-weighted BatchNorms bypass the module's forward, so SyncBatchNorm's
own synchronisation never runs for them: on 2 gloo ranks, each holding part of a batch, a
SyncBatchNorm there must give what one process gives for the whole batch (outputs, running
statistics, input gradients; the α-weight gradients summed over ranks), and a plain BatchNorm2d
must stay local."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from segnas.spaces.autodeeplab.supernet import _norm_scale

#: rank r holds images SPLIT[r]:SPLIT[r+1] of the batch (uneven: the counts must weigh the stats)
SPLIT = [0, 1, 4]


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z = 1.5 + 2 * torch.randn(SPLIT[-1], 3, 5, 6, generator=generator, dtype=torch.float64)
    scales = torch.rand(3, generator=generator, dtype=torch.float64)
    probe = torch.randn(z.shape, generator=generator, dtype=torch.float64)
    return z, scales, probe


def _step(norm: nn.Module, z: torch.Tensor, scales: torch.Tensor, probe: torch.Tensor) -> dict[str, torch.Tensor]:
    z, scales = z.clone().requires_grad_(), scales.clone().requires_grad_()
    out = _norm_scale(norm, z, scales)
    (out * probe).sum().backward()
    return {
        "out": out.detach(),
        "grad_z": z.grad,
        "grad_scales": scales.grad,
        "running_mean": norm.running_mean.clone(),
        "running_var": norm.running_var.clone(),
    }


def sync_worker(rank: int, world: int, init: str, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        z, scales, probe = _inputs()
        part = slice(SPLIT[rank], SPLIT[rank + 1])
        synced = _step(nn.SyncBatchNorm(3, affine=False).double(), z[part], scales, probe[part])
        local = _step(nn.BatchNorm2d(3, affine=False).double(), z[part], scales, probe[part])
        torch.save({"synced": synced, "local": local}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _reference(z: torch.Tensor, scales: torch.Tensor, probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """BatchNorm of ``z`` by F.batch_norm (its own statistics and running-buffer update), times
    the scales."""
    z, scales = z.clone().requires_grad_(), scales.clone().requires_grad_()
    mean, var = torch.zeros(3, dtype=z.dtype), torch.ones(3, dtype=z.dtype)
    out = F.batch_norm(z, mean, var, training=True, momentum=0.1) * scales.view(1, -1, 1, 1)
    (out * probe).sum().backward()
    return {"out": out.detach(), "grad_z": z.grad, "grad_scales": scales.grad, "running_mean": mean, "running_var": var}


def test_supernet_batchnorm_uses_the_statistics_of_every_rank(tmp_path: Path) -> None:
    mp.spawn(sync_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    z, scales, probe = _inputs()
    whole = _reference(z, scales, probe)
    close = {"atol": 1e-10, "rtol": 1e-10}
    for rank, result in enumerate(ranks):
        part = slice(SPLIT[rank], SPLIT[rank + 1])
        synced = result["synced"]
        torch.testing.assert_close(synced["out"], whole["out"][part], **close)
        torch.testing.assert_close(synced["grad_z"], whole["grad_z"][part], **close)
        torch.testing.assert_close(synced["running_mean"], whole["running_mean"], **close)
        torch.testing.assert_close(synced["running_var"], whole["running_var"], **close)
        # a plain BatchNorm2d (sync not asked for) keeps to its own rank's images
        alone = _reference(z[part], scales, probe[part])
        for key, value in alone.items():
            torch.testing.assert_close(result["local"][key], value, **close)
    # each rank's α-weight gradient is its own share; DDP sums (averages) them as it does SyncBatchNorm's
    torch.testing.assert_close(
        ranks[0]["synced"]["grad_scales"] + ranks[1]["synced"]["grad_scales"], whole["grad_scales"], **close
    )
