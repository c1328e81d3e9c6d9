"""Layers that quantize badly (issue 28, item 2): the per-layer sensitivity report names a layer
made sensitive on purpose, and the automatic mode keeps it in float, judged on held-out train
images, never on val."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segnas.hardware.onnx_export import export_onnx
from segnas.quantize.calibration import ImageCalibration
from segnas.quantize.deploy import Deployment, quantize_network
from segnas.quantize.scoring import session
from segnas.quantize.sensitivity import layer_sensitivity, smallest_kept
from segnas.quantize.static import QuantizeError, QuantizeOptions, float_compute_nodes, preprocess, quantize_static

pytest.importorskip("onnxruntime")

SIZE = (32, 32)
#: the layer made sensitive on purpose, by its ONNX node name
SENSITIVE = "/b/Conv"


class OutlierNet(nn.Module):
    """Four convolutions; ``b``'s every output channel has one weight of 1000 on an input channel
    that is always zero. In float the outlier never counts; in int8 it sets each channel's weight
    scale (1000 / 127), so every other weight of ``b`` (below 1) rounds to zero."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, classes, 1)
        with torch.no_grad():
            for conv in (self.a, self.b, self.c, self.head):  # the signal reaches the logits: classes vary
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                conv.bias.zero_()
            self.a.weight[0] = 0.0
            self.a.bias[0] = 0.0
            self.b.weight[:, 0, 1, 1] = 1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.a(x))
        x = F.relu(self.b(x))
        x = F.relu(self.c(x))
        return self.head(x)


class OutlierTail(OutlierNet):
    """The logits go through a Concat beside a channel 1000 times the image's: the Concat's
    int8 output range drowns them whatever compute layer is kept in float."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([super().forward(x), 1000 * x[:, :1]], 1)[:, :3]


class Split(list):
    """A dataset (a list of samples) that knows which split it came from."""

    def __init__(self, name: str, samples: list[dict[str, torch.Tensor]]) -> None:
        super().__init__(samples)
        self.name = name


class SelfLabelled:
    """A datamodule of noise images labelled by the float network itself (float32 mIoU is 1, so
    the int8 drop is what quantization changed), that records what it is asked to read."""

    class_names = ["a", "b", "c"]
    ignore_index = 255

    def __init__(self, net: nn.Module, train: int = 10, val: int = 3) -> None:
        generator = torch.Generator().manual_seed(1)
        self.splits = {name: self._labelled(net, count, generator) for name, count in (("train", train), ("val", val))}
        self.reads: list[str] = []

    @staticmethod
    def _labelled(net: nn.Module, count: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
        images = torch.randn(count, 3, *SIZE, generator=generator)
        with torch.no_grad():
            masks = net.eval()(images).argmax(1)
        return [{"image": image, "mask": mask} for image, mask in zip(images, masks)]

    def setup(self, stage: str) -> None:
        pass

    def train_subsets(self, *counts: int) -> list[Split]:
        names = ["calibration", "selection"]
        starts = [sum(counts[:k]) for k in range(len(counts))]
        self.reads.append("train_subsets")
        return [Split(names[k], self.splits["train"][s : s + n]) for k, (s, n) in enumerate(zip(starts, counts))]

    def source(self, split: str) -> list[dict[str, torch.Tensor]]:
        return self.splits[split]

    def dataset(self, split: str) -> Split:
        """The split as a run reports on it (nothing reserved here)."""
        return self.eval_dataset(split)

    def eval_dataset(self, split: str, indices: list[int] | None = None) -> Split:
        self.reads.append(split)
        samples = self.splits[split]
        return Split(split, [samples[i] for i in indices] if indices is not None else samples)

    def loader(self, dataset: Split, train: bool) -> list[dict[str, torch.Tensor]]:
        self.reads.append(f"loader:{dataset.name}")
        return [{"image": s["image"][None], "mask": s["mask"][None]} for s in dataset]


def plan(keep_float: tuple[str, ...] = (), **fields) -> Deployment:
    options = QuantizeOptions(keep_float=keep_float)
    return Deployment(input_size=SIZE, options=options, calib_images=4, select_images=4, **fields)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, SelfLabelled, Path]:
    net = OutlierNet().eval()
    data = SelfLabelled(net)
    out = tmp_path_factory.mktemp("auto")
    return quantize_network(net, data, plan(mode="auto", max_drop=0.1), out), data, out


def test_sensitivity_ranks_the_outlier_layer_first(tmp_path):
    net = OutlierNet().eval()
    float_path = export_onnx(net, tmp_path / "model.onnx", SIZE)
    generator = torch.Generator().manual_seed(0)
    calibration = ImageCalibration([torch.randn(3, *SIZE, generator=generator) for _ in range(4)], SIZE)
    cache = tmp_path / "ranges.json"
    quantize_static(float_path, tmp_path / "plain.onnx", calibration, QuantizeOptions(), calibration_cache=cache)
    prepared = preprocess(float_path, tmp_path / "prepared.onnx")
    layers = layer_sensitivity(prepared, cache, QuantizeOptions(), calibration.feeds, lambda path: session(path, 1))
    assert [layer.rank for layer in layers] == [1, 2, 3, 4]
    assert layers[0].node == SENSITIVE
    assert layers[0].error > 5 * layers[1].error
    assert layers[0].changed_pixels > layers[1].changed_pixels


def test_auto_mode_keeps_the_sensitive_layer_within_max_drop(auto_run):
    report, _, out = auto_run
    auto = report["auto"]
    assert auto["reached"] and auto["kept"][0] == SENSITIVE
    assert auto["trail"][0]["kept"] == 0 and auto["trail"][0]["drop"] > 0.1
    assert auto["drop"] <= 0.1
    assert float_compute_nodes(out / "model.int8.onnx") == auto["kept"] == report["kept_float"]
    assert auto["latency_ms"]["all_int8"] > 0 and auto["latency_cost"] > 0
    rows = list(csv.DictReader((out / "sensitivity.csv").open()))
    assert rows[0]["node"] == SENSITIVE and rows[0]["rank"] == "1" and len(rows) == 4
    written = json.loads((out / "quantize.json").read_text())
    assert written["sensitivity"]["top"][0]["node"] == SENSITIVE


def test_auto_mode_selects_on_held_out_train_images_never_val(auto_run):
    report, data, _ = auto_run
    assert data.reads == ["train_subsets", "loader:selection", "val", "loader:val"]
    assert report["auto"]["select_images"] == 4
    assert report["auto"]["selection_miou_float32"] == pytest.approx(1.0)


def test_auto_mode_keeps_the_named_error_for_a_pattern_that_matches_nothing(tmp_path):
    net = OutlierNet().eval()
    bad = plan(("/nope/*",), mode="auto")
    with pytest.raises(QuantizeError, match="'/nope/\\*' matches no node"):
        quantize_network(net, SelfLabelled(net), bad, tmp_path)
    assert not (tmp_path / "sensitivity.csv").exists()


def test_auto_mode_says_when_no_kept_set_reaches_max_drop(tmp_path):
    net = OutlierTail().eval()
    report = quantize_network(net, SelfLabelled(net), plan(mode="auto", max_drop=0.1), tmp_path)
    auto = report["auto"]
    assert not auto["reached"] and auto["drop"] > 0.1
    assert [try_["kept"] for try_ in auto["trail"]] == [0, 1, 2, 4]
    assert "not even all 4 compute layers in float" in auto["note"]
    assert "fine-tuning is not implemented" in auto["note"]


def test_keep_search_doubles_then_bisects_to_the_fewest_layers():
    found = smallest_kept(lambda count: 0.5 if count < 5 else 0.0, candidates=20, max_drop=0.01)
    assert found.reached and found.kept == 5
    assert [count for count, _ in found.trail] == [0, 1, 2, 4, 8, 6, 5]


def test_keep_search_says_when_no_count_reaches_the_bound():
    drops = {0: 0.5, 1: 0.3, 2: 0.2, 3: 0.2}
    found = smallest_kept(drops.__getitem__, candidates=3, max_drop=0.01)
    assert not found.reached and found.kept == 2
    assert [count for count, _ in found.trail] == [0, 1, 2, 3]
