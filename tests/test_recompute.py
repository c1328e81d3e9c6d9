"""Selective recomputation (segnas.nn.recompute) and the supernet block that uses it: what the
autograd graph holds after the forward, measured from outside (the storages every op made that
are still alive), and gradients bitwise those of the graph that keeps everything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from segnas.nn.recompute import Recomputation
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet, BlockEdges


class _Allocations(TorchDispatchMode):
    """Records a weak reference to the storage of every tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                known = self.storages.get(storage.data_ptr())
                if known is None or known[0].expired():  # a freed storage's memory may be reused
                    self.storages[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
        return out

    def held(self, *excluded: torch.Tensor) -> int:
        """Bytes of the recorded storages still alive, other than those of ``excluded``."""
        skip = {t.untyped_storage().data_ptr() for t in excluded}
        return sum(nbytes for ptr, (ref, nbytes) in self.storages.items() if not ref.expired() and ptr not in skip)


def _block_case(recompute: bool, size: int = 8, batch: int = 2):
    torch.manual_seed(0)
    channels, cells, inputs = 4, 2, 3
    block = BlockEdges(channels, cells, inputs, recompute=recompute)
    states = [torch.randn(batch, cells, channels, size, size, requires_grad=True) for _ in range(inputs)]
    weights = torch.softmax(torch.randn(inputs, 8), dim=1).requires_grad_()
    return block, states, weights


@pytest.mark.parametrize(("size", "batch"), [(8, 2), (3, 16)])  # the atrous ops as two convolutions, as one
def test_a_block_keeps_its_input_and_the_atrous_outputs_only(size, batch):
    """W = the bytes of the block's stacked input (every edge's state). The plain graph keeps
    about 14 W (ReLU, the separable op's four intermediates of 2 W each, the three BatchNorm
    inputs); with recomputation the block keeps its input (for pooling and to recompute the
    ReLU and the separable branch) and the atrous convolution's output (for its BatchNorm): 3 W,
    plus its output and a few per-channel vectors; the weight copies the convolutions would keep
    (the 3×3 atrous kernels cut out of their 5×5 slots, the batched product's per-image weights)
    are recomputed too."""
    held = {}
    for recompute in (False, True):
        block, states, weights = _block_case(recompute, size, batch)
        with _Allocations() as allocations:
            out = block(states, weights)
        held[recompute] = allocations.held(out, *block.parameters())
    width = batch * 2 * 3 * 4 * size * size * 4  # batch · cells · inputs · channels · H · W · 4 bytes
    assert held[False] > 12 * width
    assert held[True] < 3.5 * width  # the rest: pointwise weights, per-channel statistics


@pytest.mark.parametrize("size", [8, 2])
def test_recomputed_gradients_are_bitwise_those_of_the_graph_that_keeps_everything(size):
    results = []
    for recompute in (False, True):
        block, states, weights = _block_case(recompute, size)
        probe = torch.randn(2, 2, 4, size, size, generator=torch.Generator().manual_seed(1))
        (block(states, weights) * probe).sum().backward()
        results.append(
            (
                [s.grad for s in states],
                weights.grad,
                [p.grad for p in block.parameters()],
                [b.clone() for b in block.buffers()],
            )
        )
    (states_a, alpha_a, params_a, buffers_a), (states_b, alpha_b, params_b, buffers_b) = results
    assert all(torch.equal(a, b) for a, b in zip(states_a, states_b))
    assert torch.equal(alpha_a, alpha_b)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert all(torch.equal(a, b) for a, b in zip(buffers_a, buffers_b))  # running statistics updated once


def test_the_block_under_bf16_autocast_keeps_as_little_and_gives_the_same_gradients():
    """Autocast casts a convolution's float32 input to bf16 inside the op, a copy no recipe would
    cover: the block makes that cast itself so the copy is recomputed too."""
    held, grads = {}, {}
    for recompute in (False, True):
        block, states, weights = _block_case(recompute)
        with _Allocations() as allocations, torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(states, weights)
        held[recompute] = allocations.held(out, *block.parameters())
        out.float().square().sum().backward()
        grads[recompute] = [s.grad for s in states] + [p.grad for p in block.parameters()]
    assert held[True] < 0.35 * held[False]
    assert all(torch.equal(a, b) for a, b in zip(grads[False], grads[True]))


def test_the_supernet_with_recomputation_gives_the_same_step():
    """The whole supernet, both ways, with the same weights: loss, every gradient (weights, α,
    β) and every BatchNorm buffer after one training step equal bitwise."""
    torch.manual_seed(0)
    plain = AutoDeepLabSupernet(3, layers=3, filter_multiplier=2, blocks=2, aspp_channels=4, recompute=False)
    kept = AutoDeepLabSupernet(3, layers=3, filter_multiplier=2, blocks=2, aspp_channels=4, recompute=True)
    kept.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    losses = []
    for net in (plain, kept):
        loss = net(images).square().mean()
        loss.backward()
        losses.append(loss)
    assert torch.equal(*losses)
    for (name, a), (_, b) in zip(plain.named_parameters(), kept.named_parameters()):
        assert torch.equal(a.grad, b.grad), name
    for (name, a), (_, b) in zip(plain.named_buffers(), kept.named_buffers()):
        assert torch.equal(a, b), name


def synced_block_worker(rank: int, world: int, init: str, out: Path) -> None:
    """Each rank runs its half of a batch of 4 through a block whose BatchNorms are SyncBatchNorm
    (their statistics gathered in the forward, their sums reduced in the backward), both ways."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        results = {}
        for recompute in (False, True):
            block, states, weights = _block_case(recompute, size=6, batch=4)
            block = nn.SyncBatchNorm.convert_sync_batchnorm(block)
            mine = [s.detach()[2 * rank : 2 * rank + 2].requires_grad_() for s in states]
            probe = torch.randn(4, 2, 4, 6, 6, generator=torch.Generator().manual_seed(1))[2 * rank : 2 * rank + 2]
            (block(mine, weights) * probe).sum().backward()
            results[recompute] = [
                *(s.grad for s in mine),
                weights.grad,
                *(p.grad for p in block.parameters()),
                *block.buffers(),
            ]
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_recomputation_under_synchronised_batchnorm_on_two_gloo_ranks(tmp_path: Path):
    """No collective is repeated by a recipe (the statistics of the forward are reused), so every
    rank's gradients and buffers are bitwise those of its plain graph, and the ranks' running
    statistics agree (they were synchronised)."""
    mp.spawn(synced_block_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for result in ranks:
        assert all(torch.equal(a, b) for a, b in zip(result[False], result[True]))
    buffers = len(list(BlockEdges(4, 2, 3).buffers()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ranks[0][True][-buffers:], ranks[1][True][-buffers:]))


def test_cell_checkpointing_turns_the_blocks_recomputation_off():
    """Saved-tensor hooks nest innermost-first: a block's recomputation inside a checkpointed
    cell would keep what the checkpoint discards, so the supernet uses one or the other."""
    net = AutoDeepLabSupernet(
        3, layers=2, filter_multiplier=2, blocks=2, aspp_channels=4, checkpoint_cells=True, recompute=True
    )
    assert not any(block.recompute for block in net.modules() if isinstance(block, BlockEdges))


def _square_then_sum(x: torch.Tensor) -> torch.Tensor:
    with Recomputation() as keep:
        relu = keep.mark(F.threshold(x, 0.0, 0.0), F.threshold, x, 0.0, 0.0)
        return (relu * relu).sum()


def test_a_recipe_whose_input_changed_in_place_is_refused():
    x = torch.randn(5, requires_grad=True)
    y = x * 1.0
    loss = _square_then_sum(y)
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_double_backward_through_a_recipe_is_refused():
    x = torch.randn(5, requires_grad=True)
    (grad,) = torch.autograd.grad(_square_then_sum(x * 1.0), x, create_graph=False)
    assert torch.equal(grad, 2 * F.relu(x.detach()))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(_square_then_sum(x * 1.0), x, create_graph=True)


def test_a_view_of_a_marked_tensor_as_a_recipe_input_is_refused():
    x = torch.randn(4, 4, requires_grad=True)
    with Recomputation() as keep:
        relu = keep.mark(F.threshold(x, 0.0, 0.0), F.threshold, x, 0.0, 0.0)
        with pytest.raises(ValueError, match="view of a marked tensor"):
            keep.mark(relu[:2] * 2, torch.mul, relu[:2], 2)
