"""DeepLabV3+ (Chen et al., ECCV 2018): a dilated backbone, ASPP on its deepest features, and a
light decoder that refines the result with stride-4 low-level features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segnas.nn.aspp import ASPP, conv_bn_relu


class DeepLabV3PlusDecoder(nn.Module):
    """Project low-level features to ``low_level_channels``, upsample the ASPP output to their
    resolution, concatenate, refine with two 3×3 conv-BN-ReLU and classify with a 1×1 conv."""

    def __init__(
        self,
        in_channels: int,
        low_level_in_channels: int,
        num_classes: int,
        decoder_channels: int = 256,
        low_level_channels: int = 48,
    ) -> None:
        super().__init__()
        self.low_level = conv_bn_relu(low_level_in_channels, low_level_channels, 1)
        self.refine = nn.Sequential(
            conv_bn_relu(in_channels + low_level_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.low_level(low_level)
        x = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.refine(torch.cat([x, low_level], dim=1)))


class DeepLabV3Plus(nn.Module):
    """Backbone + ASPP + decoder; maps (N, 3, H, W) images to (N, num_classes, H, W) logits.

    ``backbone`` is any module that returns a list of feature maps and carries timm's
    ``feature_info``; ASPP reads the last map and the decoder the one at ``low_level_index``.
    Sizes come from the tensors at run time, so H and W need not be multiples of the stride.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_level_channels: int = 48,
        low_level_index: int = 0,
    ) -> None:
        super().__init__()
        channels = backbone.feature_info.channels()
        self.backbone = backbone
        self.low_level_index = low_level_index
        self.aspp = ASPP(channels[-1], aspp_channels, aspp_rates)
        self.decoder = DeepLabV3PlusDecoder(
            aspp_channels,
            channels[low_level_index],
            num_classes,
            decoder_channels,
            low_level_channels,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        logits = self.decoder(self.aspp(features[-1]), features[self.low_level_index])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
