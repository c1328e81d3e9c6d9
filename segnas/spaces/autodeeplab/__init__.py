"""The Auto-DeepLab space (Liu et al., CVPR 2019): a cell of B blocks over 8 operations and a
path of L layers through strides 4-32.

A genotype holds:

- ``cell``: B blocks, each two ``[op, input]`` pairs; inputs 0 = previous cell (H1),
  1 = the cell before (H2), 2 + b = block b; ops from ``PRIMITIVES`` except ``none``;
- ``path``: the stride of each layer (4, 8, 16 or 32), starting at 4 or 8 (the stem ends at 4)
  and changing by at most a factor of 2 per layer;
- ``filter_multiplier`` F (cell filters F·s/4) and the DeepLabV3+ head widths;
- ``drop_path_keep_prob``: scheduled drop path while training (1: off, the release's default in
  nas_network.py ``config`` and train.py's flag; the paper's Table 2 networks were trained with
  it, at a keep probability the release does not hold).

The presets are the authors' released network (``hnasnet`` in nas_network.py): Auto-DeepLab-S,
-M and -L differ only in F (20, 32, 48). The paper's Table 2 (Cityscapes, 19 classes, 1024×2048)
gives them 10.15M / 21.62M / 44.42M parameters, which these networks have, and 333.25B /
460.93B / 695.03B Multi-Adds, a TensorFlow profiler count that BENCHMARKS.md reproduces within
1.9 % (``segnas.hardware.count_macs(..., convention="tfprof")`` at 1025×2049).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import nn

from segnas.errors import ConfigError, GenotypeError
from segnas.genotype import Genotype
from segnas.nn.cell_ops import PRIMITIVES
from segnas.spaces.autodeeplab.decode import path_levels
from segnas.spaces.autodeeplab.network import AutoDeepLabNetwork
from segnas.spaces.base import Space

#: The released cell (nas_network.py, hnasnet): operations and hiddenstate_indices.
RELEASED_CELL = [
    [["atrous_conv_5x5", 1], ["sep_conv_3x3", 0]],
    [["sep_conv_3x3", 1], ["atrous_conv_3x3", 0]],
    [["sep_conv_3x3", 3], ["sep_conv_3x3", 1]],
    [["sep_conv_5x5", 4], ["sep_conv_5x5", 2]],
    [["sep_conv_5x5", 3], ["atrous_conv_5x5", 5]],
]
#: The released path (backbone = [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1]) as strides.
RELEASED_PATH = [4, 4, 4, 8, 16, 8, 16, 16, 32, 32, 16, 8]
STRIDES = (4, 8, 16, 32)
#: The ops a cell can hold (what decoding keeps and sampling draws): every primitive but ``none``.
OPS = tuple(name for name in PRIMITIVES if name != "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class AutoDeepLabSpace(Space):
    name = "autodeeplab"
    defaults: ClassVar[dict[str, Any]] = {
        "cell": None,
        "path": None,
        "filter_multiplier": 20,
        "aspp_channels": 256,
        "decoder_channels": 256,
        "low_level_channels": 48,
        "drop_path_keep_prob": 1.0,
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        f"autodeeplab-{size}": {"cell": RELEASED_CELL, "path": RELEASED_PATH, "filter_multiplier": f}
        for size, f in (("s", 20), ("m", 32), ("l", 48))
    }

    def validate(self, arch: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(arch) - set(self.defaults))
        if unknown:
            raise GenotypeError(f"{self.name}: unknown label(s) {unknown}; known labels: {sorted(self.defaults)}")
        out = {**self.defaults, **arch}
        out["cell"] = self._check_cell(out["cell"])
        out["path"] = self._check_path(out["path"])
        for label in ("filter_multiplier", "aspp_channels", "decoder_channels", "low_level_channels"):
            if not _is_int(out[label]) or out[label] < 1:
                raise GenotypeError(f"{self.name}: label '{label}' must be a positive integer, got {out[label]!r}")
        keep = out["drop_path_keep_prob"]
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise GenotypeError(f"{self.name}: label 'drop_path_keep_prob' must be a number in (0, 1], got {keep!r}")
        out["drop_path_keep_prob"] = float(keep)
        return out

    def _check_cell(self, cell: Any) -> list:
        if not isinstance(cell, (list, tuple)) or not cell:
            raise GenotypeError(f"{self.name}: label 'cell' must be a non-empty list of blocks, got {cell!r}")
        checked = []
        for block, pairs in enumerate(cell):
            if not isinstance(pairs, (list, tuple)) or len(pairs) != 2:
                raise GenotypeError(f"{self.name}: cell block {block} must be two [op, input] pairs, got {pairs!r}")
            block_pairs = []
            for pair in pairs:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise GenotypeError(f"{self.name}: cell block {block}: expected [op, input], got {pair!r}")
                op, state = pair
                if op not in OPS:
                    raise GenotypeError(f"{self.name}: cell block {block}: op {op!r} is not one of {list(OPS)}")
                if not _is_int(state) or not 0 <= state < 2 + block:
                    raise GenotypeError(
                        f"{self.name}: cell block {block}: input {state!r} must be 0 (H1), "
                        f"1 (H2) or an earlier block 2..{1 + block}"
                    )
                block_pairs.append([op, state])
            checked.append(block_pairs)
        return checked

    def _check_path(self, path: Any) -> list[int]:
        if not isinstance(path, (list, tuple)) or not path or not all(_is_int(s) for s in path):
            raise GenotypeError(f"{self.name}: label 'path' must be a non-empty list of strides, got {path!r}")
        previous = 4
        for layer, stride in enumerate(path, start=1):
            if stride not in STRIDES:
                raise GenotypeError(f"{self.name}: path layer {layer} has stride {stride}; expected one of {STRIDES}")
            if stride not in (previous // 2, previous, previous * 2):
                raise GenotypeError(
                    f"{self.name}: path layer {layer} moves from stride {previous} to {stride}; "
                    "a layer changes the stride by at most a factor of 2 (the stem ends at 4)"
                )
            previous = stride
        return list(path)

    def sample(self, rng: np.random.Generator, blocks: int, layers: int, **labels: Any) -> Genotype:
        """A genotype drawn uniformly from what the supernet can decode to: per block two distinct
        inputs (an unordered pair) and an op for each (any but ``none``); a path drawn uniformly
        from all valid paths of ``layers`` layers (not step by step, which would favour paths
        that stay near the boundary strides)."""
        if blocks < 1 or layers < 1:
            raise ConfigError(f"{self.name}: sampling needs blocks >= 1 and layers >= 1, got {blocks} and {layers}")
        cell = []
        for block in range(blocks):
            inputs = sorted(int(i) for i in rng.choice(2 + block, size=2, replace=False))
            cell.append([[OPS[int(rng.integers(len(OPS)))], state] for state in inputs])
        return self.genotype({"cell": cell, "path": sample_path(rng, layers), **labels})

    def build(self, genotype: Genotype, num_classes: int, **options: Any) -> nn.Module:
        """The network has no backbone to initialise (the paper trains it from scratch), so asking
        for backbone weights is a config mistake, not something to ignore."""
        if options.get("pretrained") or options.get("backbone_weights"):
            raise ConfigError(
                f"{self.name} networks have no pretrained backbone: unset model.pretrained and model.backbone_weights"
            )
        arch = genotype.arch
        return AutoDeepLabNetwork(
            arch["cell"],
            path_levels(arch["path"]),
            num_classes,
            arch["filter_multiplier"],
            arch["aspp_channels"],
            arch["decoder_channels"],
            arch["low_level_channels"],
            arch["drop_path_keep_prob"],
        )


def count_paths(layers: int) -> np.ndarray:
    """``counts[l, s]``: the ways to place layers l..L-1 when layer l-1 sits at stride index s
    (the stem counts as layer -1 at stride 4, so ``counts[0, 0]`` is the number of paths)."""
    counts = np.zeros((layers + 1, len(STRIDES)), dtype=object)  # exact integers for any L
    counts[layers, :] = 1
    for layer in range(layers - 1, -1, -1):
        for level in range(len(STRIDES)):
            counts[layer, level] = sum(
                counts[layer + 1, n] for n in (level - 1, level, level + 1) if 0 <= n < len(STRIDES)
            )
    return counts


def sample_path(rng: np.random.Generator, layers: int) -> list[int]:
    """A path (strides) uniform over all valid paths: each step is drawn in proportion to the
    number of ways to finish from there. The stem ends at stride 4, so layer 1 is at 4 or 8."""
    counts = count_paths(layers)
    path, level = [], 0
    for layer in range(layers):
        options = [n for n in (level - 1, level, level + 1) if 0 <= n < len(STRIDES)]
        weights = np.array([float(counts[layer + 1, n]) for n in options])
        level = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        path.append(STRIDES[level])
    return path
