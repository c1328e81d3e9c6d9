"""searcher=fmas with the int8 accuracy objective (``miou_int8``) and the int8 latency target
(``hardware=onnx_cpu_int8``): both scores in the records, the int8 score as an independent
quantization of the same sub-network gives it, the float32 score untouched, bad settings refused
before the supernet is read."""

from __future__ import annotations

import csv
import sys

import pytest
import torch

from segnas import hardware
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.hardware.onnx_export import export_onnx
from segnas.nn.elastic import extract, sort_channels
from segnas.quantize.calibration import ImageCalibration, dataset_images
from segnas.quantize.latency import OnnxRuntimeInt8Latency
from segnas.quantize.scoring import OnnxSegmenter, score_pair, session
from segnas.quantize.static import QuantizeOptions, quantize_static
from segnas.searchers.engine import STATE_KEY
from segnas.searchers.fmas.encoding import subnet_config
from segnas.searchers.fmas.module import COLUMNS
from segnas.searchers.fmas.scoring import channels_last, recalibrate_bn
from segnas.settings import schema
from segnas.training import load_network
from tests.conftest import compose_config, handed, run_search

#: The smallest FMAS search: two sub-networks, one generation, two images to score and calibrate on.
SEARCH = [
    "searcher=fmas",
    "searcher.pop_size=2",
    "searcher.generations=1",
    "searcher.val_images=2",
    "searcher.calib_images=2",
    "data.eval_batch_size=2",
]
INT8 = ["hardware=onnx_cpu_int8", "hardware.repeats=1", "searcher.objectives=[miou,miou_int8,latency]"]


def cfg_for(run_dir, supernet_file, *overrides):
    return compose_config(f"run_dir={run_dir}", *SEARCH, f"searcher.supernet={supernet_file}", *overrides)


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def cache(run_dir) -> dict[str, dict]:
    """The search's records by hash, as its checkpoint holds them."""
    return torch.load(run_dir / "last.ckpt", weights_only=False)[STATE_KEY]["search"]["cache"]


@pytest.fixture(scope="module")
def int8_search(supernet_file, tmp_path_factory):
    """One FMAS search on int8 mIoU and int8 ONNX Runtime latency."""
    run_dir = tmp_path_factory.mktemp("fmas_int8") / "run"
    cfg = cfg_for(run_dir, supernet_file, *INT8)
    return cfg, run_dir, run_search(cfg)


def test_the_records_hold_the_float32_and_the_int8_score(int8_search) -> None:
    _, run_dir, result = int8_search
    records = list(cache(run_dir).values())
    assert records and all(0 <= r["miou"] <= 1 and 0 <= r["miou_int8"] <= 1 for r in records)
    assert all(r["latency_ms"] > 0 and not r["latency_estimated"] for r in records)
    front = read_csv(run_dir / "pareto.csv")
    assert list(front[0])[:6] == ["genotype_hash", "genotype", "miou", "miou_int8", "latency_ms", "params"]
    assert {row["genotype_hash"]: float(row["miou_int8"]) for row in front} == {
        h: r["miou_int8"] for h, r in cache(run_dir).items() if h in {row["genotype_hash"] for row in front}
    }
    (row,) = read_csv(run_dir / "search.csv")
    assert float(row["best_miou_int8"]) == max(float(r["miou_int8"]) for r in front)
    assert {"miou", "miou_int8"} <= set(read_csv(run_dir / "fronts.csv")[0])
    assert 0 <= result.summary["supernet_miou_int8"] <= 1
    assert all("miou_int8" in c.scores for c in result.candidates)


def test_the_int8_score_is_an_independent_quantization_of_the_sub_network(int8_search, supernet_file, tmp_path):
    cfg, run_dir, _ = int8_search
    settings, context = handed(cfg)
    datamodule = context.datamodule
    datamodule.setup("fit")
    hash_, record = next(iter(cache(run_dir).items()))
    _, _, supernet = load_network(supernet_file)
    sort_channels(supernet)  # searcher.channel_order=l1
    net = extract(supernet, subnet_config(Genotype("elastic-deeplabv3plus", record["genotype"])))
    calibration = dataset_images(datamodule.calib_subset(settings.calib_images))
    recalibrate_bn(net, [channels_last(torch.stack(calibration))])  # as the search recalibrates
    size = (context.crop_size, context.crop_size)
    float_path = export_onnx(net, tmp_path / "subnet.onnx", size)
    quantize_static(float_path, tmp_path / "int8.onnx", ImageCalibration(calibration, size), QuantizeOptions())
    scores = score_pair(
        OnnxSegmenter(session(float_path), size),
        OnnxSegmenter(session(tmp_path / "int8.onnx"), size),
        datamodule.loader(datamodule.val_subset(settings.val_images), train=False),
        datamodule.class_names,
        datamodule.ignore_index,
    )
    assert record["miou_int8"] == pytest.approx(scores["int8"]["mIoU"], abs=1e-12), hash_
    assert record["miou"] == pytest.approx(scores["float32"]["mIoU"], abs=1e-12)  # the float32 ONNX file is the network


def test_the_float32_search_is_unchanged_by_the_int8_objective(int8_search, supernet_file, tmp_path) -> None:
    _, int8_dir, _ = int8_search
    run_search(cfg_for(tmp_path, supernet_file))
    plain, quantized = cache(tmp_path), cache(int8_dir)
    assert set(plain) == set(quantized)  # the first generation: the same seeded draw
    assert all(plain[h]["miou"] == quantized[h]["miou"] for h in plain)  # bit for bit
    assert not any("miou_int8" in r for r in plain.values())
    assert tuple(read_csv(tmp_path / "search.csv")[0]) == COLUMNS
    assert "miou_int8" not in read_csv(tmp_path / "pareto.csv")[0]


def test_the_winner_profile_of_every_searcher_takes_the_int8_latency_target(tmp_path) -> None:
    for searcher in ("autodeeplab", "auxcell", "fmas", "random"):
        loaded = schema.load(compose_config(f"run_dir={tmp_path}", f"searcher={searcher}", "hardware=onnx_cpu_int8"))
        assert loaded.hardware is not None
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    measured = hardware.profile(net, (16, 16), OnnxRuntimeInt8Latency(warmup=1, runs=1, repeats=1))
    assert measured["latency_ms"] > 0 and measured["latency_method"] == "onnxruntime-int8"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["searcher.objectives=[miou_int8]"], "at least one of params, macs, latency"),
        (["searcher.objectives=[miou_int8,macs]", "task=tabulate"], "no miou_int8 with task=tabulate"),
    ],
)
def test_settings_that_cannot_work_are_refused_when_loaded(overrides, message, tmp_path) -> None:
    with pytest.raises(ConfigError, match=message):
        schema.load(compose_config(f"run_dir={tmp_path}", "searcher=fmas", *overrides))


def test_a_missing_onnxruntime_is_named_before_the_supernet_is_read(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"searcher.objectives=.*without onnxruntime.*segnas\[onnx\]"):
        schema.load(compose_config(f"run_dir={tmp_path}", "searcher=fmas", "searcher.objectives=[miou_int8,macs]"))
