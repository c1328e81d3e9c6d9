"""The elastic DeepLabV3+ space (FMAS): sub-networks of one DeepLabV3+, chosen by depth per
backbone stage, hidden width per stage, the ASPP branches kept and the ASPP / decoder widths.

A genotype here is the DeepLabV3+ genotype plus two lists, ``depths`` and ``widths``, with one
entry per elastic backbone stage (see :mod:`segnas.nn.elastic_stages`: for MobileNetV2 the six
inverted-residual stages, full depths ``[2, 3, 4, 3, 3, 1]``; for aligned Xception-65 its middle
flow, full depths ``[16]``). ``null`` means the full network, and is written out as the explicit
full lists so that one network has one hash.

``build`` makes a randomly initialised standalone network with exactly the modules, state-dict
keys and shapes of the sub-network that :func:`segnas.nn.elastic.extract` slices from a trained
supernet, so a fine-tuned sub-network saved as ``model.pt`` reloads through ``load_network``.
Backbones of other families (e.g. ResNet) have no elastic backbone stages: their ``depths`` and
``widths`` are empty lists and only the head is elastic.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from segnas.errors import GenotypeError
from segnas.nn import build_backbone
from segnas.nn.elastic import shrink_backbone, stage_depths
from segnas.spaces.deeplabv3plus import DeepLabV3PlusSpace, _is_int


@functools.lru_cache(maxsize=16)
def full_depths(backbone: str, output_stride: int) -> tuple[int, ...]:
    """Blocks per elastic stage of ``backbone`` (built once per name). Its random init is drawn
    from a forked generator: counting stages must not move the global random state, or a run's
    initial weights would depend on whether this process had listed the presets before."""
    with torch.random.fork_rng(devices=[]):
        return tuple(stage_depths(build_backbone(backbone, output_stride=output_stride)))


class ElasticDeepLabV3PlusSpace(DeepLabV3PlusSpace):
    """DeepLabV3+ sub-networks: the DeepLabV3+ labels plus ``depths`` and ``widths``."""

    name = "elastic-deeplabv3plus"
    defaults: dict[str, Any] = {**DeepLabV3PlusSpace.defaults, "depths": None, "widths": None}
    presets: dict[str, dict[str, Any]] = {
        # The full networks, i.e. the supernets FMAS searches inside.
        "elastic-deeplabv3plus-mobilenetv2": {"backbone": "mobilenetv2_100", "output_stride": 16},
        "elastic-deeplabv3plus-xception": {"backbone": "xception65", "output_stride": 16},
    }

    def validate(self, arch: dict[str, Any]) -> dict[str, Any]:
        out = super().validate(arch)
        full = full_depths(out["backbone"], out["output_stride"])
        depths = list(full) if out["depths"] is None else [int(d) for d in out["depths"]]
        widths = [1.0] * len(full) if out["widths"] is None else [float(w) for w in out["widths"]]
        if len(depths) != len(full) or any(not 1 <= d <= m for d, m in zip(depths, full)):
            raise GenotypeError(
                f"{self.name}: label 'depths' must list one depth per elastic stage of "
                f"{out['backbone']}, each in [1, full], full = {list(full)}; got {out['depths']!r}"
            )
        if len(widths) != len(full):
            raise GenotypeError(
                f"{self.name}: label 'widths' must have {len(full)} entries (one per "
                f"elastic stage of {out['backbone']}), got {out['widths']!r}"
            )
        out["depths"], out["widths"] = depths, widths
        return out

    def _check_label(self, label: str, value: Any) -> None:
        if label == "depths":
            if value is not None and (not isinstance(value, (list, tuple)) or not all(_is_int(d) for d in value)):
                raise GenotypeError(f"{self.name}: label 'depths' must be a list of ints or null, got {value!r}")
        elif label == "widths":
            if value is not None and (
                not isinstance(value, (list, tuple))
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w <= 1 for w in value)
            ):
                raise GenotypeError(
                    f"{self.name}: label 'widths' must be a list of fractions in (0, 1] or null, got {value!r}"
                )
        else:
            super()._check_label(label, value)

    def _backbone(self, arch: dict[str, Any], pretrained: bool, backbone_weights: str | None) -> nn.Module:
        """The sub-network's backbone, its initial weights sliced from the full backbone (random,
        ImageNet or a local file, as for the DeepLabV3+ space)."""
        backbone = super()._backbone(arch, pretrained, backbone_weights)
        shrink_backbone(backbone, arch["depths"], arch["widths"])
        return backbone
