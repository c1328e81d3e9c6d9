"""The eight candidate operations of the Auto-DeepLab cell (Liu et al., CVPR 2019).

Each op is built the way the authors' released network builds it (tensorflow/models,
research/deeplab/core/nas_cell.py), so a searched cell and its final network use the same ops:

- ``sep_conv_kxk``: twice ReLU → depthwise k×k → pointwise 1×1 → BN (the release's
  ``separable_kxk_2``); only the first depthwise conv carries the stride.
- ``atrous_conv_kxk``: ReLU → k×k conv with rate 2 → BN; with stride 2 the release halves the
  input bilinearly (aligned corners, deeplab/core/utils.py ``resize_bilinear``) and uses rate 1.
- ``avg_pool_3x3`` / ``max_pool_3x3``: 3×3 pooling ('SAME' padding, averages exclude padding).
- ``skip_connect``: identity, or ReLU → strided 1×1 conv → BN when it must halve the resolution.
- ``none``: zero; exists only in the search, where it lets an edge switch itself off.

Every op maps ``channels`` to ``channels``; the cell projects its inputs first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: The search space's operations, in the order of α's columns.
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "atrous_conv_3x3",
    "atrous_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    """ReLU → conv (no bias) → BN: how the cell projects and resamples its inputs."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        affine: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )


class SepConv(nn.Sequential):
    def __init__(self, channels: int, kernel_size: int, stride: int, affine: bool, repeats: int = 2) -> None:
        layers: list[nn.Module] = []
        for repeat in range(repeats):
            layers += [
                nn.ReLU(inplace=False),
                nn.Conv2d(
                    channels,
                    channels,
                    kernel_size,
                    stride if repeat == 0 else 1,
                    kernel_size // 2,
                    groups=channels,
                    bias=False,
                ),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels, affine=affine),
            ]
        super().__init__(*layers)


class AtrousConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, stride: int, affine: bool) -> None:
        super().__init__()
        self.stride = stride
        rate = 1 if stride == 2 else 2
        self.conv = nn.Conv2d(channels, channels, kernel_size, 1, rate * (kernel_size // 2), rate, bias=False)
        self.bn = nn.BatchNorm2d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if self.stride == 2:
            x = F.interpolate(x, size=_halved(x), mode="bilinear", align_corners=True)
        return self.bn(self.conv(x))


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :: self.stride, :: self.stride].mul(0.0)


def _halved(x: torch.Tensor) -> tuple[int, int]:
    """The size a stride-2 'SAME' op gives, so every op of a cell agrees on the output size."""
    return (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride, 1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride, 1, count_include_pad=False),
    "skip_connect": lambda c, stride, affine: (
        nn.Identity() if stride == 1 else ReLUConvBN(c, c, 1, stride, affine=affine)
    ),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, 3, stride, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, 5, stride, affine),
    "atrous_conv_3x3": lambda c, stride, affine: AtrousConv(c, 3, stride, affine),
    "atrous_conv_5x5": lambda c, stride, affine: AtrousConv(c, 5, stride, affine),
}


def make_op(name: str, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
    """One candidate operation; ``affine=False`` is the search setting (DARTS), where α, not a
    BatchNorm scale, should decide how much an op contributes."""
    if name not in OPS:
        raise ValueError(f"unknown cell operation '{name}'; expected one of {list(OPS)}")
    return OPS[name](channels, stride, affine)
