"""The DeepLabV3+ space: one timm backbone, its output stride, and the ASPP / decoder sizes.

It is small on purpose: it names the reference networks that searched architectures are compared
against, and it is the base an elastic (FMAS) space extends with depth and width choices; such a
subclass adds labels to ``defaults`` / ``_check_label`` and reuses ``build``.

ASPP rates: when ``aspp_rates`` is not given, it is ``[6, 12, 18]`` at output stride 16 and
``[12, 24, 36]`` at output stride 8 (the paper doubles the rates when it halves the stride, so the
field of view stays the same in pixels). Rates given explicitly are kept as they are.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from segnas.errors import ConfigError, GenotypeError
from segnas.genotype import Genotype
from segnas.nn import DeepLabV3Plus, build_backbone, unknown_backbone_message
from segnas.spaces.base import Space

#: ASPP rates at output stride 16; scaled by 16 / output_stride when not given.
BASE_RATES = (6, 12, 18)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class DeepLabV3PlusSpace(Space):
    """DeepLabV3+ over any timm backbone that supports ``features_only`` and ``output_stride``."""

    name = "deeplabv3plus"
    defaults: dict[str, Any] = {
        "backbone": "mobilenetv2_100",
        "output_stride": 16,
        "aspp_rates": None,
        "aspp_channels": 256,
        "decoder_channels": 256,
        "low_level_channels": 48,
    }
    presets: dict[str, dict[str, Any]] = {
        # Sandler et al. 2018 backbone; the common DeepLabV3+ head (ASPP + decoder) on top.
        "deeplabv3plus-mobilenetv2": {"backbone": "mobilenetv2_100", "output_stride": 16},
        "deeplabv3plus-resnet50": {"backbone": "resnet50", "output_stride": 16},
        # The paper's "modified aligned Xception-65", as timm's xception65.
        "deeplabv3plus-xception": {"backbone": "xception65", "output_stride": 16},
    }

    def validate(self, arch: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(arch) - set(self.defaults))
        if unknown:
            raise GenotypeError(f"{self.name}: unknown label(s) {unknown}; known labels: {sorted(self.defaults)}")
        out = {**self.defaults, **arch}
        for label, value in out.items():
            self._check_label(label, value)
        if out["aspp_rates"] is None:
            out["aspp_rates"] = [r * 16 // out["output_stride"] for r in BASE_RATES]
        else:
            out["aspp_rates"] = [int(r) for r in out["aspp_rates"]]
        return out

    def _check_label(self, label: str, value: Any) -> None:
        """Raise GenotypeError naming ``label`` when ``value`` is of the wrong type or range."""

        def bad(expected: str) -> GenotypeError:
            return GenotypeError(f"{self.name}: label '{label}' must be {expected}, got {value!r}")

        if label == "backbone":
            if not isinstance(value, str):
                raise bad("a timm model name")
            message = unknown_backbone_message(value)
            if message is not None:
                raise GenotypeError(f"{self.name}: label 'backbone': {message}")
        elif label == "output_stride":
            if not _is_int(value) or value not in (8, 16):
                raise bad("8 or 16")
        elif label == "aspp_rates":
            if value is not None and (
                not isinstance(value, (list, tuple)) or not all(_is_int(r) and r > 0 for r in value)
            ):
                raise bad("a list of positive ints (may be empty) or null")
        elif label in ("aspp_channels", "decoder_channels", "low_level_channels"):
            if not _is_int(value) or value <= 0:
                raise bad("a positive int")

    def build(
        self,
        genotype: Genotype,
        num_classes: int,
        pretrained: bool = False,
        backbone_weights: str | None = None,
    ) -> nn.Module:
        """A DeepLabV3+ network for ``genotype``.

        Where the backbone's initial weights come from (``model.pretrained``,
        ``model.backbone_weights``) is a build option, not a label: it does not change the
        architecture, so it must not change the genotype's hash.
        """
        arch = self.check(genotype).arch
        if not _is_int(num_classes) or num_classes <= 0:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        return DeepLabV3Plus(
            self._backbone(arch, pretrained, backbone_weights),
            num_classes,
            aspp_rates=arch["aspp_rates"],
            aspp_channels=arch["aspp_channels"],
            decoder_channels=arch["decoder_channels"],
            low_level_channels=arch["low_level_channels"],
        )

    def _backbone(self, arch: dict[str, Any], pretrained: bool, backbone_weights: str | None) -> nn.Module:
        """The timm backbone for ``arch``; subclasses reshape it (the elastic space slices it)."""
        return build_backbone(
            arch["backbone"], output_stride=arch["output_stride"], pretrained=bool(pretrained), weights=backbone_weights
        )
