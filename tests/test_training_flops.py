"""Training FLOPs as benchmarks count them: a convolution's backward does the forward's work once
for the input gradient and once for the weight gradient, grouped or not (torch's own counter
multiplies a depthwise weight gradient by the channel count)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segnas.hardware.costs import count_training_flops


@pytest.mark.parametrize("groups", [1, 8, 64])
def test_a_convolution_step_is_three_forwards(groups: int) -> None:
    conv = nn.Conv2d(64, 64, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    forward = 2 * 2 * 64 * 16 * 16 * (64 // groups) * 9  # by hand: 2 FLOPs per multiply-accumulate
    assert count_training_flops(lambda: conv(x).sum().backward()) == 3 * forward
    frozen_input = torch.randn(2, 64, 16, 16)
    assert count_training_flops(lambda: conv(frozen_input).sum().backward()) == 2 * forward  # no input gradient


def test_dense_layers_count_as_torch_counts_them() -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 8, 1), nn.Flatten(), nn.LazyLinear(5))
    x = torch.randn(2, 3, 17, 17)
    net(x)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    assert count_training_flops(lambda: net(x).sum().backward()) == counter.get_total_flops()


def test_a_mobilenet_step_is_about_three_forwards() -> None:
    from segnas.nn import build_backbone

    net = build_backbone("mobilenetv2_100", output_stride=32, out_indices=(4,))
    x = torch.randn(2, 3, 64, 64)
    with FlopCounterMode(display=False) as counter:
        net(x)
    forward = counter.get_total_flops()
    step = count_training_flops(lambda: net(x)[-1].sum().backward())
    assert 2.9 * forward < step <= 3 * forward  # the stem's input needs no gradient
