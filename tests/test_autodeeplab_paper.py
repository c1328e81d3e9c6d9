"""Auto-DeepLab as the paper (Liu et al., CVPR 2019) and the authors' released code
(tensorflow/models research/deeplab/core/nas_network.py, nas_cell.py) build and train it: the
stem and the first cell's inputs, Table 2's parameters and Multi-Adds, the per-level search
heads, half-resolution Cityscapes for the search and scheduled drop path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from segnas import hardware, spaces
from segnas.data import CityscapesDataModule
from segnas.errors import GenotypeError
from segnas.hardware import count_macs, count_macs_by_convention
from segnas.spaces.autodeeplab import RELEASED_CELL, AutoDeepLabSpace
from segnas.spaces.autodeeplab.network import FixedCell, drop_path, scheduled_keep_prob
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet
from segnas.training.module import SegmentationModule
from tests.conftest import compose_config, write_cityscapes

SPACE = AutoDeepLabSpace()
#: Table 2: Params and Multi-Adds (Cityscapes, 19 classes, 1024x2048).
TABLE2 = {"s": (10.15, 333.25), "m": (21.62, 460.93), "l": (44.42, 695.03)}


def small(path: list[int], **labels) -> nn.Module:
    arch = {
        "cell": RELEASED_CELL,
        "path": path,
        "filter_multiplier": 2,
        "aspp_channels": 8,
        "decoder_channels": 8,
        "low_level_channels": 4,
        **labels,
    }
    torch.manual_seed(0)
    return spaces.build(SPACE.genotype(arch), 5)


def captured(module: nn.Module, net: nn.Module, images: torch.Tensor) -> tuple:
    """(inputs, output) of ``module``'s first call during ``net(images)``."""
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append((args, out)))
    try:
        with torch.no_grad():
            net(images)
    finally:
        handle.remove()
    return seen[0]


def test_first_cell_reads_conv1_bn_resized_then_projected():
    """nas_network.py ``_nas_stem`` keeps cell_outputs = [conv1_bn, conv2_bn]: the first cell's
    H2 is the stride-2, 64-channel conv1 output before its ReLU; nas_cell.py ``_cell_base`` resizes
    it (bilinear, aligned corners) to H1 and then applies ReLU-1x1-BN."""
    net = small([4, 4]).eval()
    images = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        conv1 = net.stem1(images)
    first = net.cells[0]
    (h1, h2, _), _ = captured(first, net, images)
    assert h2.shape[1] == 64 and h2.shape[-2:] == (19, 23) and torch.equal(h2, conv1)
    assert h1.shape[1] == 128 and h1.shape[-2:] == (10, 12)
    relu, conv, norm = first.preprocess2
    assert conv.in_channels == 64
    with torch.no_grad():
        resized = F.interpolate(conv1, size=(10, 12), mode="bilinear", align_corners=True)
        reference = norm(conv(relu(resized)))
    (_,), projected = captured(first.preprocess2, net, images)
    assert torch.allclose(projected, reference, atol=1e-6)


def test_stem_output_is_conv2_bn_without_relu():
    """No ReLU after conv2_bn in ``_nas_stem``: the first cell's H1 carries negative values."""
    net = small([4, 4]).eval()
    (h1, _, _), _ = captured(net.cells[0], net, torch.randn(2, 3, 32, 32))
    assert h1.min() < 0


def test_decoder_reads_cell_2_or_the_stem_end_point():
    """feature_extractor.py DECODER_END_POINTS for nas_hnasnet: {4: ['Cell_2']} on the released
    path; a path that never stays at stride 4 takes the stem's conv2_bn (pnasnet's 'Stem')."""
    assert spaces.build(spaces.resolve_arch("autodeeplab-s"), 19).low_level_index == 2
    net = small([8, 16]).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stem = net.stem2(net.stem1(images))
    (low,), _ = captured(net.decoder.low_level, net, images)
    assert torch.equal(low, stem) and low.min() < 0


def meta_preset(size: str) -> nn.Module:
    with torch.device("meta"):
        return spaces.build(spaces.resolve_arch(f"autodeeplab-{size}"), 19)


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_presets_have_table_2_parameters_to_two_decimals(size):
    params = sum(p.numel() for p in meta_preset(size).parameters())
    assert round(params / 1e6, 2) == TABLE2[size][0]


def test_tfprof_convention_against_a_hand_count():
    """A rate-3 conv on 10x13 runs on SpaceToBatchND's 12x15 grid; a 3x3 average pool adds
    9 values per output; an Add one per output (tfprof: FLOPs; Multi-Adds = FLOPs / 2)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dilated = nn.Conv2d(3, 6, 3, padding=3, dilation=3, bias=False)
            self.plain = nn.Conv2d(6, 6, 1)
            self.pool = nn.AvgPool2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.dilated(x)
            return self.plain(y) + self.pool(y)

    net = Net()
    positions = 10 * 13
    plain_macs = positions * 6 * 3 * 9 + positions * 6 * 6
    assert count_macs(net, (10, 13)) == plain_macs
    grid_macs = 12 * 15 * 6 * 3 * 9 + positions * 6 * 6
    extra_flops = positions * 6 + 9 * positions * 6 + positions * 6  # bias add, pool windows, the add
    assert count_macs(net, (10, 13), convention="tfprof") == (2 * grid_macs + extra_flops) // 2
    with pytest.raises(ValueError, match="convention"):
        count_macs(net, (10, 13), convention="tflite")


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_presets_reproduce_table_2_multi_adds_at_deeplabs_eval_size(size):
    """Table 2's Multi-Adds are TensorFlow's profiler count; at DeepLab's Cityscapes eval crop
    (1025x2049) the same count of our network is within 2 % (the remaining 1.6-1.9 %: see
    BENCHMARKS.md). The torch count is each Conv2d's Cout*Cin/g*k*k*H*W."""
    net = meta_preset(size)
    macs = count_macs_by_convention(net, (1025, 2049))
    paper = TABLE2[size][1] * 1e9
    assert abs(macs["tfprof"] - paper) / paper < 0.02
    conv_macs = 0

    def hook(module, args, out):
        nonlocal conv_macs
        conv_macs += out.shape[-2] * out.shape[-1] * module.weight[0].numel() * module.out_channels

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, 1025, 2049, device="meta"))
    for handle in handles:
        handle.remove()
    assert macs["torch"] == conv_macs < macs["tfprof"]


def test_profile_reports_both_conventions():
    result = hardware.profile(meta_preset("s"), (1025, 2049))
    assert round(result["macs_tfprof"] / 1e9, 2) == 327.91 and round(result["macs"] / 1e9, 2) == 320.45
    assert "SpaceToBatchND" in result["macs_tfprof_note"]


def test_search_heads_are_as_wide_as_their_nodes():
    """Paper, Sec. 5.1: the search's ASPP branches at stride s have B*F*s/4 filters."""
    blocks, multiplier = 2, 3
    net = AutoDeepLabSupernet(4, layers=3, filter_multiplier=multiplier, blocks=blocks)
    widths = {int(level): head[0].out_channels for level, head in net.heads.items()}
    assert widths == {level: blocks * multiplier * 2**level for level in range(4)}
    for level, head in net.heads.items():
        convs = [m for m in head[0].branches.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 3 and {conv.out_channels for conv in convs} == {widths[int(level)]}
    fixed = AutoDeepLabSupernet(4, layers=3, filter_multiplier=multiplier, blocks=blocks, aspp_channels=8)
    assert {head[0].out_channels for head in fixed.heads.values()} == {8}
    assert compose_config(tiny=False).searcher.aspp_channels is None


def test_cityscapes_half_resolution_for_training_only(tmp_path: Path):
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([7, 26, 0, 4, 8, 11], np.uint8), size=(40, 48))
    root = write_cityscapes(tmp_path / "cityscapes", label_values=labels)
    common = {"root": str(root), "crop_size": 16, "batch_size": 2}
    full = CityscapesDataModule(**common)
    half = CityscapesDataModule(image_scale=0.5, **common)
    original, scaled = full.source("train")[0], half.source("train")[0]
    assert scaled["image"].shape == (20, 24, 3) and scaled["mask"].shape == (20, 24)
    assert np.array_equal(scaled["mask"], original["mask"][::2, ::2])  # nearest: no new labels
    means = original["image"].reshape(20, 2, 24, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(scaled["image"] - means).max() <= 0.5
    assert half.source("val")[0]["mask"].shape == (40, 48)  # scored at full resolution


def test_cityscapes_search_preset_is_the_papers_setting():
    cfg = compose_config("experiment=autodeeplab_cityscapes", "run_dir=/tmp/unused", tiny=False)
    assert cfg.data.image_scale == 0.5 and cfg.eval.scale == 0.5 and cfg.data.crop_size == 321
    assert list(cfg.data.scale_range) == [1.0, 1.0] and cfg.searcher.aspp_channels is None
    assert cfg.retrain.epochs == 242  # a preset's top-level keys win over conf/config.yaml's


@pytest.mark.parametrize(
    ("keep", "cell", "progress", "expected"),
    [
        (0.7, 5, 0.5, 1 - 0.5 * 6 / 12 * 0.3),
        (0.7, 11, 1.0, 0.7),
        (0.7, 11, 0.0, 1.0),
        (0.7, 0, 3.0, 1 - 1 / 12 * 0.3),
        (0.5, 3, 0.25, 1 - 0.25 * 4 / 12 * 0.5),
    ],
)
def test_keep_probability_follows_the_released_schedule(keep, cell, progress, expected):
    """nas_cell.py: p_l = 1 - (cell+1)/cells * (1 - p); p_t = 1 - min(1, step/total) * (1 - p_l)."""
    assert scheduled_keep_prob(keep, cell, 12, progress) == pytest.approx(expected)


def test_training_progress_is_step_over_total():
    net = small([4])
    for step, total, progress in [(50, 100, 0.5), (150, 100, 1.0), (5, math.inf, 0.0), (3, 0, 0.0)]:
        net.set_training_progress(step, total)
        assert net.training_progress == progress


def test_drop_path_is_one_bernoulli_draw_per_sample():
    torch.manual_seed(0)
    out = drop_path(torch.ones(4000, 3, 2, 2), 0.75)
    per_sample = out.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # a sample is kept or dropped whole
    assert per_sample[:, 0].unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (per_sample[:, 0] > 0).float().mean().item() == pytest.approx(0.75, abs=0.03)


def test_drop_path_spares_the_identity_and_drops_the_rest():
    """The release applies drop path to every op but its identity ('none', our skip_connect)."""
    torch.manual_seed(0)
    skip = FixedCell([[["skip_connect", 0], ["skip_connect", 1]]], 4, 4, 4, 1).train()
    conv = FixedCell([[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]], 4, 4, 4, 1).train()
    h1, h2 = torch.randn(64, 4, 6, 6), torch.randn(64, 4, 6, 6)
    assert torch.equal(skip(h1, h2, 0.5), skip(h1, h2, 1.0))
    both_dropped = conv(h1, h2, 0.5).flatten(1).abs().amax(dim=1) == 0
    assert 0 < both_dropped.sum() < 64  # some samples lose both ops, others keep one or two


def seeded(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``net(images)`` from a fixed seed, so ASPP's dropout draws alike in two networks."""
    torch.manual_seed(1)
    return net(images)


def test_drop_path_acts_in_training_only():
    net = small([4, 8, 4], drop_path_keep_prob=0.5)
    reference = small([4, 8, 4])
    reference.load_state_dict(net.state_dict())
    images = torch.randn(4, 3, 32, 32)
    net.set_training_progress(1, 1)
    with torch.no_grad():
        assert torch.equal(net.eval()(images), reference.eval()(images))
        net.train(), reference.train()
        assert not torch.allclose(seeded(net, images), seeded(reference, images))
        net.set_training_progress(0, 10)  # the first step keeps everything
        assert torch.allclose(seeded(net, images), seeded(reference, images))
    with pytest.raises(GenotypeError, match="drop_path_keep_prob"):
        small([4], drop_path_keep_prob=0.0)


def test_training_module_tells_the_network_the_step_and_total(tmp_path: Path):
    net = small([4], drop_path_keep_prob=0.7)
    calls = []
    follow = net.set_training_progress
    net.set_training_progress = lambda step, total: (calls.append((step, total)), follow(step, total))
    batches = [{"image": torch.randn(2, 3, 16, 16), "mask": torch.randint(0, 5, (2, 16, 16))} for _ in range(3)]
    module = SegmentationModule(net, 5, lambda params: torch.optim.SGD(params, lr=0.01))
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    assert calls == [(0, 3), (1, 3), (2, 3)]
