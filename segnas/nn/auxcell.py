"""The searched decoder of Fast Dense NAS (Nekrasov et al., CVPR 2019), built from its encoding.

Structure, as the authors' code builds it (``nas-segm-pytorch``, read for semantics only):

* every encoder map is projected to ``width`` channels (1×1 conv-BN-ReLU); they form the pool
  ``0..3``; each block's output is appended to the pool (``4, 5, 6``);
* a block takes two pool entries, passes each through its own copy of the searched cell, projects
  both (1×1 conv-BN-ReLU), upsamples the coarser to the finer and sums them;
* the block outputs no later block consumes are upsampled to the finest of them, concatenated,
  passed through ReLU, a 1×1 conv-BN-ReLU back to ``width`` and a 3×3 classifier;
* the cell keeps a flat list of features: ``0`` is its input, ``1`` the first op's output, then
  each layer appends its two op outputs and their sum, so layer ``k`` (1-based) writes positions
  ``3k-1``, ``3k`` (the ops) and ``3k+1`` (the sum). A layer's two positions index that list, op
  outputs included. The cell returns the sum of the first op's output and of the layer sums that
  no later layer reads (reading an op output or the input consumes nothing);
* auxiliary heads (search only): after each block a copy of the cell (``aux_cell``) and a 3×3
  classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: The 11 operations, in the order of the authors' op ids.
OP_NAMES: tuple[str, ...] = (
    "conv1x1",
    "conv3x3",
    "sep3x3",
    "sep5x5",
    "global_avg_pool",
    "conv3x3_rate3",
    "conv3x3_rate12",
    "sep3x3_rate3",
    "sep5x5_rate6",
    "skip",
    "zero",
)
#: Positions a cell layer may read: layer k (1-based) sees the 3k - 1 features written before it.
NUM_CELL_LAYERS = 3
NUM_BLOCKS = 3


def layer_positions(layer: int) -> int:
    """How many cell features layer ``layer`` (1-based) may read: 2, 5, 8 for layers 1, 2, 3."""
    return 3 * layer - 1


def _conv_bn_relu(channels: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


def _separable(channels: int, kernel: int, dilation: int, repeats: int) -> nn.Sequential:
    """``repeats`` × (depthwise k×k, pointwise 1×1, BN, ReLU): the final models repeat it twice."""
    padding = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = []
    for _ in range(repeats):
        layers += [
            nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers)


class GlobalAvgPoolConv(nn.Module):
    """Global average pool, 1×1 conv-BN-ReLU, bilinear upsampling back to the input size.

    Its BatchNorm sees one value per channel per image: training needs batches of 2 or more.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.project = _conv_bn_relu(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(x.mean((2, 3), keepdim=True))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class Zero(nn.Module):
    """The 'none' op: zeros shaped like the input (it still counts as consuming its input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "conv1x1": lambda c, r: _conv_bn_relu(c, 1),
    "conv3x3": lambda c, r: _conv_bn_relu(c, 3),
    "sep3x3": lambda c, r: _separable(c, 3, 1, r),
    "sep5x5": lambda c, r: _separable(c, 5, 1, r),
    "global_avg_pool": lambda c, r: GlobalAvgPoolConv(c),
    "conv3x3_rate3": lambda c, r: _conv_bn_relu(c, 3, 3),
    "conv3x3_rate12": lambda c, r: _conv_bn_relu(c, 3, 12),
    "sep3x3_rate3": lambda c, r: _separable(c, 3, 3, r),
    "sep5x5_rate6": lambda c, r: _separable(c, 5, 6, r),
    "skip": lambda c, r: nn.Identity(),
    "zero": lambda c, r: Zero(),
}


def build_op(name: str, channels: int, repeats: int = 1) -> nn.Module:
    """One of :data:`OP_NAMES` on ``channels`` channels (``repeats`` only affects separable ops)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown op '{name}'; known ops: {', '.join(OP_NAMES)}")
    return _BUILDERS[name](channels, repeats)


class Cell(nn.Module):
    """The searched contextual cell: ``first`` op on the input, then layers of two ops summed.

    ``layers`` holds ``(position_a, position_b, op_a, op_b)`` per layer, positions in the cell's
    flat feature list (see the module docstring).
    """

    def __init__(self, first: str, layers: Sequence[Sequence], channels: int, repeats: int = 1) -> None:
        super().__init__()
        self.first = build_op(first, channels, repeats)
        self.positions: list[tuple[int, int]] = []
        ops: list[nn.Module] = []
        outputs = [1]
        for index, (pos_a, pos_b, op_a, op_b) in enumerate(layers, start=1):
            if not (0 <= pos_a < layer_positions(index) and 0 <= pos_b < layer_positions(index)):
                raise ValueError(
                    f"cell layer {index}: positions ({pos_a}, {pos_b}) outside [0, {layer_positions(index)})"
                )
            self.positions.append((int(pos_a), int(pos_b)))
            ops += [build_op(op_a, channels, repeats), build_op(op_b, channels, repeats)]
            outputs = [p for p in outputs if p not in (pos_a, pos_b)] + [3 * index + 1]
        self.ops = nn.ModuleList(ops)
        #: Features summed into the output: the first op's and the layer sums nothing read.
        self.outputs: tuple[int, ...] = tuple(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x, self.first(x)]
        for layer, (pos_a, pos_b) in enumerate(self.positions):
            a = self.ops[2 * layer](features[pos_a])
            b = self.ops[2 * layer + 1](features[pos_b])
            features += [a, b, a + b]
        out = features[self.outputs[0]]
        for index in self.outputs[1:]:
            out = out + features[index]
        return out


def _upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == reference.shape[-2:]:
        return x
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())


def _finer_first(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (a, b) if tuple(a.shape[-2:]) >= tuple(b.shape[-2:]) else (b, a)


class Block(nn.Module):
    """Two pool entries, each through its own copy of the cell, projected, upsampled and summed."""

    def __init__(self, first: str, layers: Sequence[Sequence], width: int, repeats: int) -> None:
        super().__init__()
        self.cell_a = Cell(first, layers, width, repeats)
        self.cell_b = Cell(first, layers, width, repeats)
        self.project_a = _project(width, width)
        self.project_b = _project(width, width)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = self.project_a(self.cell_a(a))
        b = self.project_b(self.cell_b(b))
        fine, coarse = _finer_first(a, b)
        return fine + _upsample_to(coarse, fine)


class AuxCellDecoder(nn.Module):
    """The searched decoder over a list of encoder maps; returns (logits, auxiliary logits).

    Logits come out at the finest resolution among the collected blocks; auxiliary logits (one
    per block, empty without ``aux_heads``) at each block's own resolution.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        first: str,
        layers: Sequence[Sequence],
        connections: Sequence[Sequence[int]],
        width: int = 64,
        repeats: int = 2,
        aux_heads: bool = False,
        aux_cell: bool = True,
    ) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(_project(c, width) for c in in_channels)
        self.connections = [(int(a), int(b)) for a, b in connections]
        collected: list[int] = []
        for index, (a, b) in enumerate(self.connections):
            pool = len(in_channels) + index
            if not (0 <= a < pool and 0 <= b < pool):
                raise ValueError(f"block {index}: inputs ({a}, {b}) outside the pool [0, {pool})")
            collected = [c for c in collected if c not in (a, b)] + [pool]
        self.collected: tuple[int, ...] = tuple(collected)
        self.blocks = nn.ModuleList(Block(first, layers, width, repeats) for _ in self.connections)
        self.aux_heads = (
            nn.ModuleList(
                nn.Sequential(
                    Cell(first, layers, width, repeats) if aux_cell else nn.Identity(),
                    nn.Conv2d(width, num_classes, 3, padding=1),
                )
                for _ in self.connections
            )
            if aux_heads
            else None
        )
        self.fuse = _project(width * len(self.collected), width)
        self.classifier = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pool = [adapt(f) for adapt, f in zip(self.adapt, features)]
        aux: list[torch.Tensor] = []
        for index, (block, (a, b)) in enumerate(zip(self.blocks, self.connections)):
            pool.append(block(pool[a], pool[b]))
            if self.aux_heads is not None:
                aux.append(self.aux_heads[index](pool[-1]))
        outputs = [pool[i] for i in self.collected]
        finest = max(outputs, key=lambda t: tuple(t.shape[-2:]))
        merged = torch.cat([_upsample_to(t, finest) for t in outputs], dim=1)
        return self.classifier(self.fuse(F.relu(merged))), aux


class AuxCellNet(nn.Module):
    """Encoder + searched decoder: (N, 3, H, W) images to (N, C, H, W) logits.

    The auxiliary heads, when the decoder has them, are only reachable through
    :meth:`forward_with_aux`, so ``forward`` (and any export of it) never runs them.
    """

    def __init__(self, encoder: nn.Module, decoder: AuxCellDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.decoder(self.encoder(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
