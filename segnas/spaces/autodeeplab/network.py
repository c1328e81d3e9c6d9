"""The final Auto-DeepLab network, built from a decoded cell and path as the authors' released
network builds it (tensorflow/models research/deeplab/core/nas_network.py and nas_cell.py):

- stem (``_nas_stem``): conv0 3×3/2 (64) → BN → ReLU → conv1 3×3 (64) → BN → ReLU → conv2 3×3/2
  (128) → BN. The release keeps ``cell_outputs = [conv1_bn, conv2_bn]``, BatchNorm outputs
  before their ReLU: the first cell's H1 is the stride-4 conv2 output and its H2 the stride-2,
  64-channel conv1 output. No ReLU follows conv2_bn; every consumer starts with its own;
- one cell per layer with F·2^k filters at level k; going one level coarser, the ops that read
  the cell inputs (H1, H2) run with stride 2; going one level finer, H1 is resized ×2 before
  the cell (``_build_nas_base``); in the cell (``_cell_base``) H2 is resized to H1 and then
  projected (ReLU-1×1-BN) when its width differs, and H1 is always projected; the cell output
  concatenates its B blocks. Resizing is bilinear with aligned corners (deeplab/core/utils.py
  ``resize_bilinear``);
- scheduled drop path (``NASBaseCell._apply_drop_path``) on every op output but the identity,
  in training only, so an exported network is the same with or without it;
- a ReLU after the last cell, then DeepLabV3+: ASPP with rates (6, 12, 18)·16/s on the last
  cell and the decoder with low-level features from the last stride-4 cell of the path (the
  release's ``Cell_2`` for its path, feature_extractor.py ``DECODER_END_POINTS``), or from the
  stem's conv2_bn (the release's ``Stem`` end point) when the path never stays at stride 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segnas.nn import ASPP, DeepLabV3PlusDecoder
from segnas.nn.cell_ops import ReLUConvBN, make_op
from segnas.spaces.autodeeplab.supernet import halve

STEM_CHANNELS = (64, 128)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """deeplab/core/utils.py ``resize_bilinear``: ``tf.image.resize_bilinear(align_corners=True)``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def scheduled_keep_prob(keep_prob: float, cell_index: int, num_cells: int, progress: float) -> float:
    """The keep probability of ``NASBaseCell._apply_drop_path``: scaled by the cell's depth,
    ``1 - (cell_index + 1) / num_cells · (1 - keep_prob)``, then by training progress (current
    step / total steps, capped at 1), ``1 - progress · (1 - that)``; 1 at the first step."""
    by_depth = 1.0 - (cell_index + 1) / num_cells * (1.0 - keep_prob)
    return 1.0 - min(1.0, max(0.0, progress)) * (1.0 - by_depth)


def drop_path(x: torch.Tensor, keep_prob: float) -> torch.Tensor:
    """Zeroes each sample's whole tensor with probability ``1 - keep_prob`` and scales the kept
    ones by ``1 / keep_prob`` (the release's noise shape ``[batch, 1, 1, 1]``)."""
    noise = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
    return x * torch.floor(keep_prob + noise) / keep_prob


class FixedCell(nn.Module):
    """One decoded cell: ``cell`` lists, per block, two ``[op, input]`` pairs (inputs: 0 = H1,
    1 = H2, 2 + b = block b)."""

    def __init__(self, cell: list, prev_channels: int, prev_prev_channels: int, filters: int, stride: int) -> None:
        super().__init__()
        self.inputs = [[int(pair[1]) for pair in block] for block in cell]
        # the release skips drop path for its identity op ('none', our skip_connect)
        self.droppable = [[op != "skip_connect" for op, _ in block] for block in cell]
        self.preprocess1 = ReLUConvBN(prev_channels, filters)
        self.preprocess2 = ReLUConvBN(prev_prev_channels, filters) if prev_prev_channels != filters else nn.Identity()
        self.ops = nn.ModuleList(
            nn.ModuleList(make_op(op, filters, stride if state < 2 else 1) for op, state in block) for block in cell
        )
        self.out_channels = len(cell) * filters

    def forward(self, h1: torch.Tensor, h2: torch.Tensor, keep_prob: float = 1.0) -> torch.Tensor:
        """``keep_prob``: drop path's keep probability for this cell now (1: off)."""
        states = [self.preprocess1(h1), self.preprocess2(resize_bilinear(h2, h1.shape[-2:]))]
        for ops, inputs, droppable in zip(self.ops, self.inputs, self.droppable):
            left, right = (
                drop_path(op(states[state]), keep_prob) if drop and keep_prob < 1.0 else op(states[state])
                for op, state, drop in zip(ops, inputs, droppable)
            )
            states.append(left + right)
        return torch.cat(states[2:], dim=1)


class AutoDeepLabNetwork(nn.Module):
    """Stem → cells along ``levels`` (0..3 per layer) → ASPP → DeepLabV3+ decoder → logits.

    ``drop_path_keep_prob`` < 1 turns on scheduled drop path while training; its schedule needs
    the training progress, which the training module sets before every step through
    :meth:`set_training_progress` (the release reads TensorFlow's global step).
    """

    def __init__(
        self,
        cell: list,
        levels: list[int],
        num_classes: int,
        filter_multiplier: int = 20,
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_level_channels: int = 48,
        drop_path_keep_prob: float = 1.0,
    ) -> None:
        super().__init__()
        stride2, stride4 = STEM_CHANNELS
        self.stem1 = nn.Sequential(
            nn.Conv2d(3, stride2, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stride2),
            nn.ReLU(),
            nn.Conv2d(stride2, stride2, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stride2),
        )
        self.stem2 = nn.Sequential(nn.ReLU(), nn.Conv2d(stride2, stride4, 3, 2, 1, bias=False), nn.BatchNorm2d(stride4))
        self.levels = list(levels)
        self.drop_path_keep_prob = float(drop_path_keep_prob)
        #: current step / total steps of the training run, for the drop-path schedule
        self.training_progress = 0.0
        self.cells = nn.ModuleList()
        channels = [stride2, stride4]  # cell_outputs = [conv1_bn, conv2_bn]
        previous = 0
        for level in self.levels:
            cell_module = FixedCell(
                cell, channels[-1], channels[-2], filter_multiplier * 2**level, stride=2 if level == previous + 1 else 1
            )
            self.cells.append(cell_module)
            channels.append(cell_module.out_channels)
            previous = level
        at_stride4 = [i for i, level in enumerate(self.levels) if level == 0]
        self.low_level_index = at_stride4[-1] if at_stride4 else None
        low_channels = channels[2 + self.low_level_index] if at_stride4 else stride4
        last_stride = 4 * 2 ** self.levels[-1]
        self.aspp = ASPP(channels[-1], aspp_channels, rates=[r * 16 // last_stride for r in (6, 12, 18)])
        self.decoder = DeepLabV3PlusDecoder(
            aspp_channels, low_channels, num_classes, decoder_channels, low_level_channels
        )

    def set_training_progress(self, step: int, total_steps: float) -> None:
        """How far training is (``step / total_steps``, capped at 1; 0 when the total is unknown
        or infinite), as the release's ``current_step / total_training_steps``."""
        finite = total_steps > 0 and math.isfinite(total_steps)
        self.training_progress = min(1.0, step / total_steps) if finite else 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        conv1 = self.stem1(images)
        stem = self.stem2(conv1)
        sizes = [tuple(stem.shape[-2:])]
        for _ in range(3):
            sizes.append(halve(sizes[-1]))
        outputs = [conv1, stem]
        previous = 0
        low_level = stem
        dropping = self.training and self.drop_path_keep_prob < 1.0
        for index, (cell, level) in enumerate(zip(self.cells, self.levels)):
            h1 = outputs[-1]
            if level == previous - 1:
                # the release resizes to 2(d - 1) + 1, which is the stem's size at that stride
                # for inputs of 4k + 1 pixels (its 1025 x 2049 Cityscapes crops); ours is that size always
                h1 = resize_bilinear(h1, sizes[level])
            keep = (
                scheduled_keep_prob(self.drop_path_keep_prob, index, len(self.cells), self.training_progress)
                if dropping
                else 1.0
            )
            outputs.append(cell(h1, outputs[-2], keep))
            if index == self.low_level_index:
                low_level = outputs[-1]
            previous = level
        logits = self.decoder(self.aspp(F.relu(outputs[-1])), low_level)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
