"""The DeepLabV3+ space: presets build and run, defaults are filled, bad labels are named."""

from __future__ import annotations

import pytest
import torch

from segnas.errors import GenotypeError, WeightsError
from segnas.genotype import Genotype
from segnas.spaces import build, get_space, presets
from segnas.spaces.deeplabv3plus import DeepLabV3PlusSpace

SPACE = DeepLabV3PlusSpace()


def test_presets_are_registered():
    names = {"deeplabv3plus-mobilenetv2", "deeplabv3plus-resnet50", "deeplabv3plus-xception"}
    assert names <= set(presets())
    assert get_space("deeplabv3plus") is not None


@pytest.mark.parametrize("preset", sorted(DeepLabV3PlusSpace.presets))
def test_preset_validates_builds_and_runs(preset):
    arch = SPACE.validate(dict(SPACE.presets[preset]))
    assert SPACE.validate(dict(arch)) == arch
    assert arch["output_stride"] == 16 and "pretrained" not in arch
    model = build(Genotype(SPACE.name, arch), num_classes=7).eval()
    with torch.no_grad():
        for size in [(32, 32), (45, 61)]:
            assert model(torch.randn(1, 3, *size)).shape == (1, 7, *size)


def test_xception_preset_is_aligned_xception65():
    assert SPACE.presets["deeplabv3plus-xception"]["backbone"] == "xception65"


def test_default_rates_follow_output_stride():
    assert SPACE.validate({"output_stride": 16})["aspp_rates"] == [6, 12, 18]
    assert SPACE.validate({"output_stride": 8})["aspp_rates"] == [12, 24, 36]
    explicit = {"output_stride": 8, "aspp_rates": [6, 12, 18]}
    assert SPACE.validate(explicit)["aspp_rates"] == [6, 12, 18]
    assert SPACE.validate({"aspp_rates": []})["aspp_rates"] == []


def test_arch_choices_reach_the_network():
    arch = {"output_stride": 8, "aspp_rates": [2], "aspp_channels": 16, "decoder_channels": 24, "low_level_channels": 8}
    model = SPACE.build(SPACE.genotype(arch), num_classes=3)
    assert len(model.aspp.branches) == 3
    assert model.aspp.branches[1][0].dilation == (2, 2)
    assert model.decoder.low_level[0].out_channels == 8
    assert model.decoder.classifier.in_channels == 24
    assert model.backbone.feature_info.reduction()[-1] == 8


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("backbone", 123),
        ("backbone", "mobilenetv2_10"),
        ("output_stride", 32),
        ("output_stride", True),
        ("aspp_rates", [6, -1]),
        ("aspp_rates", "6,12"),
        ("aspp_channels", 0),
        ("decoder_channels", 2.5),
        ("low_level_channels", True),
    ],
)
def test_validate_names_the_bad_label(label, value):
    with pytest.raises(GenotypeError, match=f"'{label}'"):
        SPACE.validate({label: value})


def test_validate_names_unknown_labels():
    with pytest.raises(GenotypeError, match="depth"):
        SPACE.validate({"depth": 3})


def test_weights_are_build_options_not_labels():
    genotype = SPACE.genotype({})
    model = SPACE.build(genotype, num_classes=2, pretrained=False, backbone_weights=None)
    assert model.decoder.classifier.out_channels == 2
    with pytest.raises(GenotypeError, match="pretrained"):
        SPACE.validate({"pretrained": True})
    with pytest.raises(TypeError):
        SPACE.build(genotype, num_classes=2, output_stride=8)


def test_missing_backbone_weights_named_at_build(tmp_path):
    genotype = SPACE.genotype({})
    with pytest.raises(WeightsError, match="model.backbone_weights"):
        build(genotype, num_classes=2, backbone_weights=str(tmp_path / "missing.pt"))


def test_listing_the_presets_leaves_the_global_random_state_alone() -> None:
    """The elastic space builds a backbone to count its stages the first time a preset is
    resolved; drawing its random init from the global generator would make a run's initial
    weights depend on whether the process had resolved a preset before."""
    from segnas.spaces.elastic_deeplabv3plus import full_depths

    full_depths.cache_clear()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    presets()
    assert torch.equal(torch.get_rng_state(), state)
