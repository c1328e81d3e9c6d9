"""The GAP8 lookup-table estimate: labelled as an estimate, monotone in MACs for a fixed layer
type, driven by its configuration, and usable from hardware=gap8."""

from __future__ import annotations

import itertools

import pytest
from hydra.utils import instantiate
from torch import nn

from segnas import pipeline
from segnas.errors import ConfigError
from segnas.hardware.gap8 import MACS_PER_CYCLE, Gap8Latency
from tests.conftest import compose_config


def conv(out_channels: int, kernel: int = 3, groups: int = 1, in_channels: int = 16) -> nn.Module:
    """A fixed 1x1 stem from the 3 image channels, then the layer under test."""
    return nn.Sequential(
        nn.Conv2d(3, in_channels, 1), nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=groups)
    )


def test_labelled_as_an_estimate() -> None:
    result = Gap8Latency().measure(conv(8), (16, 16))
    assert result["latency_estimated"] is True
    assert result["latency_method"] == "lookup-table estimate"
    assert result["latency_target"] == "gap8" and result["latency_ms"] > 0
    assert result["latency_layers"] == 2 and set(result["latency_ms_by_layer_type"]) == {"conv", "pointwise"}


@pytest.mark.parametrize("kernel, groups", [(3, 1), (1, 1)])
def test_monotone_in_macs_for_a_fixed_layer_type(kernel: int, groups: int) -> None:
    target = Gap8Latency()
    widths = [4, 8, 16, 32, 64, 128, 256]
    latencies = [target.measure(conv(w, kernel, groups), (32, 32))["latency_ms"] for w in widths]
    assert all(a < b for a, b in itertools.pairwise(latencies)), latencies
    sizes = [8, 16, 32, 64]
    by_size = [target.measure(conv(32, kernel, groups), (s, s))["latency_ms"] for s in sizes]
    assert all(a < b for a, b in itertools.pairwise(by_size)), by_size


def test_depthwise_is_its_own_table_row() -> None:
    target = Gap8Latency()
    rows = target.layers(conv(16, 3, groups=16), (16, 16))
    assert rows[0]["type"] == "pointwise" and rows[1]["type"] == "depthwise"
    assert rows[1]["macs"] == 16 * 16 * 16 * 9
    slow = Gap8Latency(macs_per_cycle={**MACS_PER_CYCLE, "depthwise": MACS_PER_CYCLE["depthwise"] / 4})
    assert (
        slow.measure(conv(16, 3, 16), (64, 64))["latency_ms"] > target.measure(conv(16, 3, 16), (64, 64))["latency_ms"]
    )


def test_compute_bound_layer_matches_the_formula() -> None:
    """A big 3x3 conv: cycles = MACs / (cores x table) + layer overhead (DMA is smaller)."""
    target = Gap8Latency(l3_bytes_per_cycle=1e9)
    rows = target.layers(conv(64, 3, in_channels=64), (16, 16))
    macs = 16 * 16 * 64 * 64 * 9
    expected = macs / (8 * MACS_PER_CYCLE["conv"]) + 2000
    assert target.cycles(rows)[1] == pytest.approx(expected)


def test_configuration_changes_the_estimate() -> None:
    net = conv(64, 3, in_channels=64)
    base = Gap8Latency().measure(net, (32, 32))["latency_ms"]
    assert Gap8Latency(cores=4).measure(net, (32, 32))["latency_ms"] > base
    assert Gap8Latency(cluster_mhz=350).measure(net, (32, 32))["latency_ms"] == pytest.approx(base / 2)
    # a tiny L2 pushes tensors to L3, which is slow and not overlapped
    assert Gap8Latency(l2_kb=16).measure(net, (32, 32))["latency_ms"] > base
    with pytest.raises(ConfigError, match="macs_per_cycle"):
        Gap8Latency(macs_per_cycle={"conv": 1.0})


def test_hardware_gap8_config_and_profile_task(tmp_path) -> None:
    cfg = compose_config(
        f"run_dir={tmp_path / 'run'}",
        "task=profile",
        "hardware=gap8",
        "searcher=fmas",
        "arch=deeplabv3plus-mobilenetv2",
        "profile.input_size=[32,32]",
    )
    target = instantiate(cfg.hardware)
    assert isinstance(target, Gap8Latency) and target.cores == 8
    summary = pipeline.run(cfg)
    assert summary["latency_estimated"] is True and summary["latency_method"] == "lookup-table estimate"
    assert summary["latency_ms"] > 0


def test_the_default_table_meets_dorys_end_to_end_mobilenet_v1_on_gap8() -> None:
    # issue 13, item 20: DORY (IEEE TC 2021) runs 1.0-MobileNet-128 end to end at 4.3 fps; the
    # uncalibrated table estimated 130.6 ms, 44 % optimistic
    import timm

    net = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    for target in (Gap8Latency(), instantiate(compose_config("hardware=gap8", tiny=False).hardware)):
        assert target.measure(net, (128, 128))["latency_ms"] == pytest.approx(1000 / 4.3, rel=0.02)
