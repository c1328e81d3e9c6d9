"""The LR-ASPP space: a timm backbone (MobileNetV3-Large by default), its output stride and the
head's width. Like the DeepLabV3+ space it names a reference network searched architectures are
compared against (``task=compare``'s hand-designed baselines), not a space anyone searches."""

from __future__ import annotations

from typing import Any

from torch import nn

from segnas.errors import ConfigError, GenotypeError
from segnas.genotype import Genotype
from segnas.nn import build_backbone, unknown_backbone_message
from segnas.nn.lraspp import LRASPP
from segnas.spaces.base import Space


class LRASPPSpace(Space):
    name = "lraspp"
    defaults: dict[str, Any] = {"backbone": "mobilenetv3_large_100", "output_stride": 16, "inter_channels": 128}
    presets: dict[str, dict[str, Any]] = {
        # Howard et al. 2019, Sec. 6.4: LR-ASPP on MobileNetV3-Large, last stage dilated (stride 16)
        "lraspp-mobilenetv3-large": {"backbone": "mobilenetv3_large_100", "output_stride": 16},
    }

    def validate(self, arch: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(arch) - set(self.defaults))
        if unknown:
            raise GenotypeError(f"{self.name}: unknown label(s) {unknown}; known labels: {sorted(self.defaults)}")
        out = {**self.defaults, **arch}
        if not isinstance(out["backbone"], str) or unknown_backbone_message(out["backbone"]) is not None:
            raise GenotypeError(f"{self.name}: label 'backbone' must be a timm model name, got {out['backbone']!r}")
        if out["output_stride"] not in (8, 16) or isinstance(out["output_stride"], bool):
            raise GenotypeError(f"{self.name}: label 'output_stride' must be 8 or 16, got {out['output_stride']!r}")
        channels = out["inter_channels"]
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise GenotypeError(f"{self.name}: label 'inter_channels' must be a positive int, got {channels!r}")
        return out

    def build(
        self, genotype: Genotype, num_classes: int, pretrained: bool = False, backbone_weights: str | None = None
    ) -> nn.Module:
        arch = self.check(genotype).arch
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        backbone = build_backbone(
            arch["backbone"], output_stride=arch["output_stride"], pretrained=bool(pretrained), weights=backbone_weights
        )
        return LRASPP(backbone, num_classes, arch["inter_channels"])
