"""LR-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019, Sec. 6.4): the compact
segmentation head users reach for first, as a hand-designed baseline for every comparison.

The head reads two backbone maps: the last (stride 16 with a dilated last stage) and the one at
stride 8. The high map goes through a 1×1 conv + BN + ReLU (``inter_channels``) gated by a
squeeze-excitation-like branch (global average pooling, 1×1 conv, sigmoid); the gated map is
upsampled to the low map, and the two are classified by 1×1 convs and summed, then upsampled to
the image. Global pooling stands where the paper uses a large average pooling window with a
large stride (it was tuned for 1024×2048 Cityscapes inputs); torchvision's
``torchvision.models.segmentation.lraspp`` makes the same choice, and tests/test_lraspp.py checks
this head against that one loaded with the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LRASPPHead(nn.Module):
    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False), nn.Sigmoid()
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        gated = self.cbr(high) * self.scale(high)
        gated = F.interpolate(gated, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(gated)


class LRASPP(nn.Module):
    """Backbone + LR-ASPP head; maps (N, 3, H, W) images to (N, num_classes, H, W) logits.

    ``backbone`` returns a list of feature maps and carries timm's ``feature_info``: the head
    reads the last map and the first one at stride 8.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, inter_channels: int = 128) -> None:
        super().__init__()
        reductions, channels = backbone.feature_info.reduction(), backbone.feature_info.channels()
        if 8 not in reductions:
            raise ValueError(f"LR-ASPP reads a stride-8 map; the backbone's maps have strides {reductions}")
        self.low_index = reductions.index(8)
        self.backbone = backbone
        self.head = LRASPPHead(channels[self.low_index], channels[-1], num_classes, inter_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        logits = self.head(features[self.low_index], features[-1])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
