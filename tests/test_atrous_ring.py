"""The Auto-DeepLab supernet's paired atrous kernels: each 3×3 kernel sits zero-ringed in a 5×5
slot so both atrous ops run as one convolution. The ring must never act, whatever the optimiser,
and in a pickled copy of the block too (what ``ddp_spawn`` sends its ranks), or atrous_conv_3x3
becomes a 5×5 op; the two-process run is in test_autodeeplab_search.py."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from segnas.nn.cell_ops import PRIMITIVES
from segnas.spaces.autodeeplab.supernet import BlockEdges

CHANNELS, CELLS, INPUTS = 4, 1, 2


def _banks(block: BlockEdges) -> torch.Tensor:
    """(edges, [3×3 | 5×5], out, in, 5, 5) view of the stored kernels."""
    return block.atrous.detach().view(CELLS * INPUTS, 2, CHANNELS, CHANNELS, 5, 5)


def _ring(tensor: torch.Tensor) -> torch.Tensor:
    """The ring around the 3×3 kernels of a (edges, 2, out, in, 5, 5) tensor."""
    ring = tensor[:, 0].clone()
    ring[..., 1:4, 1:4] = 0
    return ring


def _train(block: BlockEdges, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        states = [torch.randn(2, CELLS, CHANNELS, 6, 6, generator=generator) for _ in range(INPUTS)]
        weights = torch.softmax(torch.randn(INPUTS, len(PRIMITIVES), generator=generator), 1)
        block(states, weights).square().sum().backward()
        assert _ring(block.atrous.grad.view_as(_banks(block))).abs().sum() == 0
        optimizer.step()


OPTIMIZERS: dict[str, Callable] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, weight_decay=3e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=1e-2),
}


@pytest.mark.parametrize("pickled", [False, True], ids=["block", "pickled-copy"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_ring_stays_exactly_zero_under_any_optimiser(optimizer: str, pickled: bool) -> None:
    torch.manual_seed(0)
    block = BlockEdges(CHANNELS, CELLS, INPUTS)
    if pickled:
        block = pickle.loads(pickle.dumps(block))
    assert _ring(_banks(block)).abs().sum() == 0
    before = _banks(block).clone()
    _train(block, OPTIMIZERS[optimizer](block.parameters()))
    after = _banks(block)
    assert _ring(after).abs().sum() == 0
    # the taps that are the ops' own do train: the 3×3 centres and the whole 5×5 kernels
    assert not torch.equal(after[:, 0, ..., 1:4, 1:4], before[:, 0, ..., 1:4, 1:4])
    assert not torch.equal(after[:, 1], before[:, 1])


def test_atrous_ops_equal_plain_dilated_convolutions_even_with_a_stored_ring() -> None:
    """A ring that reached the stored kernels (a checkpoint trained where the ring was not kept
    at zero) does not act: the 3×3 op is the plain 3×3 rate-2 convolution of the inner taps."""
    torch.manual_seed(0)
    block = BlockEdges(CHANNELS, CELLS, INPUTS)
    with torch.no_grad():
        block.atrous.add_(0.1 * torch.randn_like(block.atrous))  # rings and all
    states = [torch.randn(2, CELLS, CHANNELS, 6, 6) for _ in range(INPUTS)]
    for name, kernels, padding in (
        ("atrous_conv_3x3", _banks(block)[:, 0, ..., 1:4, 1:4], 2),
        ("atrous_conv_5x5", _banks(block)[:, 1], 4),
    ):
        weights = torch.zeros(INPUTS, len(PRIMITIVES))
        weights[:, PRIMITIVES.index(name)] = 1.0
        out = block(states, weights)
        reference = sum(
            F.batch_norm(
                F.conv2d(F.relu(state[:, 0]), kernels[edge], padding=padding, dilation=2), None, None, training=True
            )
            for edge, state in enumerate(states)
        )
        torch.testing.assert_close(out[:, 0], reference, atol=1e-5, rtol=1e-5)


def test_checkpoints_keep_their_keys() -> None:
    """No mask is stored (the forward reads each op's own taps and never the ring), so
    checkpoints written before and after the ring's mask was dropped load strictly into each
    other."""
    block = BlockEdges(CHANNELS, CELLS, INPUTS)
    state = block.state_dict()
    assert not any("mask" in key for key in state)
    BlockEdges(CHANNELS, CELLS, INPUTS).load_state_dict(state, strict=True)
