"""Building blocks: backbone contract, ASPP, DeepLabV3+ shapes and local weights files."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import timm
import torch

from segnas.errors import ConfigError, WeightsError
from segnas.nn import ASPP, DeepLabV3Plus, build_backbone


@pytest.mark.parametrize(
    ("name", "output_stride", "channels", "strides"),
    [
        ("mobilenetv2_100", 32, [24, 32, 96, 320], [4, 8, 16, 32]),
        ("mobilenetv2_100", 16, [24, 32, 96, 320], [4, 8, 16, 16]),
        ("mobilenetv2_100", 8, [24, 32, 96, 320], [4, 8, 8, 8]),
        ("resnet50", 16, [256, 512, 1024, 2048], [4, 8, 16, 16]),
        ("resnet50", 8, [256, 512, 1024, 2048], [4, 8, 8, 8]),
        ("xception65", 16, [256, 728, 1024, 2048], [4, 8, 16, 16]),
        ("xception65", 8, [256, 728, 1024, 2048], [4, 8, 8, 8]),
    ],
)
def test_backbone_channels_and_strides(name, output_stride, channels, strides):
    backbone = build_backbone(name, output_stride=output_stride).eval()
    assert backbone.feature_info.channels() == channels
    assert backbone.feature_info.reduction() == strides
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == channels
    assert [64 // f.shape[-1] for f in features] == strides


def test_unknown_backbone_lists_close_names():
    with pytest.raises(ConfigError, match="mobilenetv2_100") as info:
        build_backbone("mobilenetv2_10")
    assert "arch.backbone" in str(info.value)


@pytest.mark.parametrize(("rates", "pooling", "branches"), [((6, 12, 18), True, 5), ((), True, 2), ((), False, 1)])
def test_aspp_branches(rates, pooling, branches):
    aspp = ASPP(16, 8, rates=rates, image_pooling=pooling).eval()
    assert len(aspp.branches) == branches
    dilations = [b[0].dilation[0] for b in aspp.branches[1 : 1 + len(rates)]]
    assert dilations == list(rates)
    assert aspp(torch.randn(2, 16, 5, 7)).shape == (2, 8, 5, 7)


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("size", [(50, 70), (33, 47)])
def test_deeplab_output_matches_input_size(output_stride, size):
    backbone = build_backbone("mobilenetv2_100", output_stride=output_stride)
    model = DeepLabV3Plus(backbone, 5, aspp_rates=(1, 2), aspp_channels=16, decoder_channels=16)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 5, *size)


def test_deeplab_trains_with_batch_of_two():
    model = DeepLabV3Plus(build_backbone("mobilenetv2_100"), 3, aspp_channels=8, decoder_channels=8)
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    assert model.decoder.classifier.weight.grad is not None


def test_missing_weights_file_names_the_key(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match="model.backbone_weights") as info:
        build_backbone("mobilenetv2_100", weights=str(path))
    assert str(path) in str(info.value)


def _outputs(backbone, x):
    with torch.no_grad():
        return backbone.eval()(x)


def test_weights_file_round_trip(tmp_path):
    source = build_backbone("mobilenetv2_100")
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("mobilenetv2_100", weights=str(path))
    x = torch.randn(1, 3, 32, 32)
    for a, b in zip(_outputs(source, x), _outputs(loaded, x)):
        assert torch.equal(a, b)


def test_weights_from_lightning_checkpoint(tmp_path):
    source = build_backbone("mobilenetv2_100")
    state = {f"net.backbone.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = build_backbone("mobilenetv2_100", weights=str(path))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(_outputs(source, x)[-1], _outputs(loaded, x)[-1])


def test_weights_from_full_timm_checkpoint(tmp_path):
    full = timm.create_model("mobilenetv2_100")
    path = tmp_path / "mobilenetv2_100.pt"
    torch.save(full.state_dict(), path)
    loaded = build_backbone("mobilenetv2_100", weights=str(path))
    key = "conv_stem.weight"
    assert torch.equal(loaded.state_dict()[key], full.state_dict()[key])


def test_weights_for_another_backbone_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(WeightsError, match="model.backbone_weights"):
        build_backbone("mobilenetv2_100", weights=str(path))


@pytest.mark.parametrize("features_only", [True, False])
def test_weights_of_a_sibling_width_refused(tmp_path, features_only):
    """mobilenetv2_050 has the same keys as mobilenetv2_100 but narrower tensors."""
    path = tmp_path / "narrow.pt"
    torch.save(timm.create_model("mobilenetv2_050", features_only=features_only).state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit"):
        build_backbone("mobilenetv2_100", weights=str(path))


def test_pretrained_without_network_says_how_to_stay_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        build_backbone("mobilenetv2_100", pretrained=True)
    assert "model.backbone_weights" in str(info.value)
    assert "model.pretrained=false" in str(info.value)


def test_weights_from_full_timm_checkpoint_of_renamed_family(tmp_path):
    """timm renames Xception's modules in its feature wrapper (blocks.0 -> blocks_0)."""
    full = timm.create_model("xception41")
    path = tmp_path / "xception41.pt"
    torch.save(full.state_dict(), path)
    loaded = build_backbone("xception41", weights=str(path))
    assert torch.equal(
        loaded.state_dict()["blocks_0.shortcut.conv.weight"], full.state_dict()["blocks.0.shortcut.conv.weight"]
    )
