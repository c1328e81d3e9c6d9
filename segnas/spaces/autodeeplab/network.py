"""The final Auto-DeepLab network, built from a decoded cell and path as the authors' released
network builds it (tensorflow/models research/deeplab/core/nas_network.py and nas_cell.py):

- stem: three 3×3 conv-BN-ReLU, 64 (stride 2), 64, 128 (stride 2) channels;
- one cell per layer with F·2^k filters at level k; going one level coarser, the ops that read
  the cell inputs (H1, H2) run with stride 2; going one level finer, H1 is upsampled ×2 before
  the cell; H2 is resized to H1 and projected only when its width differs; H1 is always
  projected (ReLU-1×1-BN); the cell output concatenates its B blocks;
- a ReLU after the last cell, then DeepLabV3+: ASPP with rates (6, 12, 18)·16/s on the last
  cell and the decoder with low-level features from the last stride-4 cell of the path (the
  stem when the path never stays at stride 4).

Drop-path, which the release uses during its training only, is not part of the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.nn import ASPP, DeepLabV3PlusDecoder
from segnas.nn.aspp import conv_bn_relu
from segnas.nn.cell_ops import ReLUConvBN, make_op
from segnas.spaces.autodeeplab.supernet import halve

STEM_CHANNELS = 128


class FixedCell(nn.Module):
    """One decoded cell: ``cell`` lists, per block, two ``[op, input]`` pairs (inputs: 0 = H1,
    1 = H2, 2 + b = block b)."""

    def __init__(self, cell: list, prev_channels: int, prev_prev_channels: int, filters: int, stride: int) -> None:
        super().__init__()
        self.inputs = [[int(pair[1]) for pair in block] for block in cell]
        self.preprocess1 = ReLUConvBN(prev_channels, filters)
        self.preprocess2 = ReLUConvBN(prev_prev_channels, filters) if prev_prev_channels != filters else nn.Identity()
        self.ops = nn.ModuleList(
            nn.ModuleList(make_op(op, filters, stride if state < 2 else 1) for op, state in block) for block in cell
        )
        self.out_channels = len(cell) * filters

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        if h2.shape[-2:] != h1.shape[-2:]:
            h2 = F.interpolate(h2, size=h1.shape[-2:], mode="bilinear", align_corners=False)
        states = [self.preprocess1(h1), self.preprocess2(h2)]
        for ops, inputs in zip(self.ops, self.inputs):
            states.append(ops[0](states[inputs[0]]) + ops[1](states[inputs[1]]))
        return torch.cat(states[2:], dim=1)


class AutoDeepLabNetwork(nn.Module):
    """Stem → cells along ``levels`` (0..3 per layer) → ASPP → DeepLabV3+ decoder → logits."""

    def __init__(
        self,
        cell: list,
        levels: list[int],
        num_classes: int,
        filter_multiplier: int = 20,
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_level_channels: int = 48,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            conv_bn_relu(64, 64, 3),
            nn.Conv2d(64, STEM_CHANNELS, 3, 2, 1, bias=False), nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU(),
        )
        self.levels = list(levels)
        self.cells = nn.ModuleList()
        channels = [STEM_CHANNELS, STEM_CHANNELS]  # cell_outputs = [stem, stem]: H2 of cell 0 is the stem
        previous = 0
        for level in self.levels:
            cell_module = FixedCell(cell, channels[-1], channels[-2], filter_multiplier * 2**level,
                                    stride=2 if level == previous + 1 else 1)
            self.cells.append(cell_module)
            channels.append(cell_module.out_channels)
            previous = level
        stride4 = [i for i, level in enumerate(self.levels) if level == 0]
        self.low_level_index = stride4[-1] if stride4 else None
        low_channels = channels[2 + self.low_level_index] if stride4 else STEM_CHANNELS
        last_stride = 4 * 2 ** self.levels[-1]
        self.aspp = ASPP(channels[-1], aspp_channels, rates=[r * 16 // last_stride for r in (6, 12, 18)])
        self.decoder = DeepLabV3PlusDecoder(aspp_channels, low_channels, num_classes, decoder_channels,
                                            low_level_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stem = self.stem(images)
        sizes = [tuple(stem.shape[-2:])]
        for _ in range(3):
            sizes.append(halve(sizes[-1]))
        outputs = [stem, stem]
        previous = 0
        low_level = stem
        for index, (cell, level) in enumerate(zip(self.cells, self.levels)):
            h1 = outputs[-1]
            if level == previous - 1:
                h1 = F.interpolate(h1, size=sizes[level], mode="bilinear", align_corners=False)
            outputs.append(cell(h1, outputs[-2]))
            if index == self.low_level_index:
                low_level = outputs[-1]
            previous = level
        logits = self.decoder(self.aspp(F.relu(outputs[-1])), low_level)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
