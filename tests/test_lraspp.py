"""The LR-ASPP baseline against torchvision's LR-ASPP loaded with the same weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from segnas import spaces
from segnas.errors import GenotypeError
from segnas.hardware import count_params
from segnas.nn.lraspp import LRASPPHead


def test_the_head_computes_torchvisions_lraspp_head() -> None:
    torch.manual_seed(0)
    theirs = torchvision.models.segmentation.lraspp.LRASPPHead(40, 960, 7, 128).eval()
    ours = LRASPPHead(40, 960, 7, 128).eval()
    for module in theirs.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    ours.load_state_dict(theirs.state_dict())  # the same parameter names and shapes
    low, high = torch.randn(2, 40, 16, 20), torch.randn(2, 960, 8, 10)
    with torch.no_grad():
        torch.testing.assert_close(ours(low, high), theirs({"low": low, "high": high}))


def test_the_preset_has_torchvisions_parameter_count_and_full_size_logits() -> None:
    net = spaces.build(spaces.resolve_arch("lraspp-mobilenetv3-large"), 21)
    reference = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21
    )
    assert count_params(net) == sum(p.numel() for p in reference.parameters()) == 3_221_538
    assert net.eval()(torch.randn(1, 3, 70, 90)).shape == (1, 21, 70, 90)


def test_a_bad_label_is_named() -> None:
    with pytest.raises(GenotypeError, match="inter_channels"):
        spaces.resolve_arch({"space": "lraspp", "arch": {"inter_channels": 0}})
