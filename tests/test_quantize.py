"""int8 post-training quantization (segnas/quantize, task=quantize): the int8 file against the
float32 network, the calibration reader, keep_float read back from the graph, the named errors,
and the task end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from segnas.data import SyntheticDataModule
from segnas.errors import ConfigError
from segnas.hardware import export_onnx
from segnas.metrics import per_class_iou
from segnas.quantize.calibration import ImageCalibration, dataset_images, deployment_input
from segnas.quantize.deploy import Deployment, image_counts, quantize_network, reported_val
from segnas.quantize.scoring import ONNX_ATOL, ONNX_RTOL, OnnxSegmenter, check_export, score_pair, session
from segnas.quantize.static import (
    QuantizeError,
    QuantizeOptions,
    compute_nodes,
    float_compute_nodes,
    quantize_static,
)
from segnas.training.checkpoint import save_network

SIZE = (32, 32)


class TinySegmenter(nn.Module):
    """Conv-BN-ReLU ×2 and a 1×1 classifier: small enough to train in a second."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def tiny_data(**kw) -> SyntheticDataModule:
    data = SyntheticDataModule(
        num_classes=3, crop_size=32, image_size=32, train_size=24, val_size=6, batch_size=4, **kw
    )
    data.setup()
    return data


@pytest.fixture(scope="module")
def trained() -> tuple[TinySegmenter, SyntheticDataModule]:
    """A TinySegmenter trained for 60 steps: confident enough that int8 rounding moves few
    pixels across a class boundary (an untrained net's near-ties would flip many)."""
    torch.manual_seed(0)
    data = tiny_data()
    net = TinySegmenter()
    optimiser = torch.optim.Adam(net.parameters(), lr=0.02)
    loader = data.loader(data.dataset("train"), train=True)
    for _ in range(10):
        for batch in loader:
            loss = nn.functional.cross_entropy(net(batch["image"]), batch["mask"], ignore_index=255)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval(), data


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory) -> tuple[Path, Path, list[torch.Tensor]]:
    net, data = trained
    root = tmp_path_factory.mktemp("int8")
    images = dataset_images(data.train_subsets(8)[0])
    float_path = export_onnx(net, root / "model.onnx", SIZE)
    int8_path = root / "model.int8.onnx"
    quantize_static(float_path, int8_path, ImageCalibration(images, SIZE), QuantizeOptions())
    return float_path, int8_path, images


def test_int8_classes_agree_with_torch_and_float_onnx_within_tolerance(trained, files):
    net, data = trained
    float_path, int8_path, _ = files
    images = torch.stack(dataset_images(data.eval_dataset("val")))
    with torch.no_grad():
        reference = net(images)
    float_logits = OnnxSegmenter(session(float_path), SIZE)(images)
    int8_logits = OnnxSegmenter(session(int8_path), SIZE)(images)
    assert (float_logits - reference).abs().max() <= ONNX_ATOL + ONNX_RTOL * reference.abs().max()
    agree = (int8_logits.argmax(1) == reference.argmax(1)).float().mean()
    assert agree >= 0.95
    # the file really is int8: weights quantized, one QuantizeLinear per activation at least
    ops = [node.op_type for node in onnx.load(str(int8_path)).graph.node]
    assert ops.count("DequantizeLinear") >= 3 and "QuantizeLinear" in ops
    assert float_compute_nodes(int8_path) == []


def test_calibration_reader_feeds_the_configured_images_in_the_eval_transform():
    data = tiny_data()
    calib, select = data.train_subsets(5, 3)
    assert len(calib) == 5 and len(select) == 3
    assert not set(calib.indices) & set(select.indices)
    assert calib.indices == data.train_subsets(5, 3)[0].indices  # seeded
    # whole images through the eval transform: what val sees, not a random training crop
    source = data.source("train")
    for k, index in enumerate(calib.indices):
        expected = data.eval_dataset("train", [index])[0]["image"]
        assert torch.equal(calib[k]["image"], expected)
        assert expected.shape[-2:] == source[index]["image"].shape[:2]
    reader = ImageCalibration(dataset_images(calib), (16, 24))
    feeds = [reader.get_next() for _ in range(5)]
    assert reader.get_next() is None
    first = deployment_input(calib[0]["image"], (16, 24)).numpy()
    assert feeds[0]["image"].shape == (1, 3, 16, 24) and np.array_equal(feeds[0]["image"], first)
    reader.rewind()
    assert np.array_equal(reader.get_next()["image"], first)


def test_keep_float_leaves_exactly_the_named_layers_in_float(trained, files, tmp_path):
    float_path, _, images = files
    graph = onnx.load(str(float_path))
    convs = compute_nodes(graph)
    assert len(convs) == 3
    done = quantize_static(
        float_path,
        tmp_path / "kept.onnx",
        ImageCalibration(images, SIZE),
        QuantizeOptions(keep_float=(convs[0], "/classifier/*")),
    )
    expected = [convs[0], next(name for name in convs if name.startswith("/classifier/"))]
    assert sorted(done["kept_float"]) == sorted(expected)
    assert sorted(float_compute_nodes(tmp_path / "kept.onnx")) == sorted(expected)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods_give_working_files(files, tmp_path, method):
    float_path, _, images = files
    out = tmp_path / f"{method}.onnx"
    quantize_static(float_path, out, ImageCalibration(images, SIZE), QuantizeOptions(calibration=method))
    logits = OnnxSegmenter(session(out), SIZE)(torch.stack(images[:2]))
    assert torch.isfinite(logits).all()


def test_score_pair_against_a_hand_built_confusion_matrix():
    """Two fake 'networks' returning fixed logits: both mIoUs, each class's change and the changed
    pixel share computed by hand."""
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 2, 2]])
    first = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    second = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 0, 2], [2, 2, 2, 1]])

    def net(classes):
        return lambda images: (
            nn.functional.one_hot(classes, 3).permute(2, 0, 1)[None].float().repeat(images.shape[0], 1, 1, 1)
        )

    batch = {"image": torch.zeros(1, 3, 4, 4), "mask": mask[None]}
    result = score_pair(net(first), net(second), [batch], ["a", "b", "c"])

    def confusion(pred):
        matrix = torch.zeros(3, 3, dtype=torch.long)
        for t, p in zip(mask.flatten().tolist(), pred.flatten().tolist()):
            if t != 255:
                matrix[t, p] += 1
        return matrix

    iou_first, iou_second = per_class_iou(confusion(first)), per_class_iou(confusion(second))
    assert result["float32"]["mIoU"] == pytest.approx(float(iou_first.mean()))
    assert result["int8"]["mIoU"] == pytest.approx(float(iou_second.mean()))
    assert result["per_class_iou"]["b"]["change"] == pytest.approx(float(iou_second[1] - iou_first[1]))
    assert result["changed_pixels"] == pytest.approx(3 / 16)  # the ignored pixel that changed counts


def test_named_errors_before_calibration(files, tmp_path):
    float_path, _, images = files
    with pytest.raises(QuantizeError, match=r"quantize.keep_float: '/aspp/\*' matches no node"):
        quantize_static(
            float_path, tmp_path / "x.onnx", ImageCalibration(images, SIZE), QuantizeOptions(keep_float=("/aspp/*",))
        )
    with pytest.raises(QuantizeError, match="calibration set is empty"):
        ImageCalibration([], SIZE)
    with pytest.raises(QuantizeError, match="quantize.calibration=histogram"):
        QuantizeOptions(calibration="histogram")
    assert issubclass(QuantizeError, ConfigError)


def test_an_op_ort_cannot_quantize_is_named_with_its_layer(tmp_path):
    """A weighted op outside ONNX Runtime's quantizers (here Einsum with a weight initializer) is
    refused, naming the node and its op, unless it is kept in float on purpose."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 3), dtype=np.float32), "weight")
    node = helper.make_node("Einsum", ["image", "weight"], ["logits"], name="/mix/Einsum", equation="nchw,cd->ndhw")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])],
        [weight],
    )
    path = tmp_path / "einsum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    images = [torch.randn(3, 4, 4)]
    with pytest.raises(QuantizeError, match=r"cannot quantize 1 weighted layer\(s\): /mix/Einsum \(Einsum\)"):
        quantize_static(path, tmp_path / "q.onnx", ImageCalibration(images, (4, 4)), QuantizeOptions())
    kept = quantize_static(
        path, tmp_path / "q.onnx", ImageCalibration(images, (4, 4)), QuantizeOptions(keep_float=("/mix/*",))
    )
    assert kept["kept_float"] == ["/mix/Einsum"]


def test_an_export_that_is_not_the_network_is_refused(trained, files):
    net, _ = trained
    float_path, _, images = files
    other = TinySegmenter().eval()
    with pytest.raises(QuantizeError, match="float32 ONNX export differs from the PyTorch network"):
        check_export(other, session(float_path), images[:1], SIZE)
    assert check_export(net, session(float_path), images[:1], SIZE) <= 1e-3


def test_a_network_that_does_not_export_is_named(trained, tmp_path):
    class Untraceable(nn.Module):
        def forward(self, x):
            return torch.fft.fft2(x).real + x  # no ONNX symbolic for aten::fft_fft2 at opset 17

    _, data = trained
    net = Untraceable()
    net.register_parameter("w", nn.Parameter(torch.zeros(1)))
    with pytest.raises(QuantizeError, match=r"Untraceable does not export to ONNX at 32x32, opset 17 .*fft_fft2"):
        quantize_network(net, data, Deployment(SIZE, QuantizeOptions(), calib_images=2, opset=17), tmp_path)


def test_quantize_network_report(trained, tmp_path):
    net, data = trained
    plan = Deployment(SIZE, QuantizeOptions(), calib_images=8, val_images=4, threads=1)
    report = quantize_network(net, data, plan, tmp_path)
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.int8.onnx").is_file()
    assert json.loads((tmp_path / "quantize.json").read_text()) == json.loads(json.dumps(report))
    assert report["scores"]["images"] == 4 and report["quantization"]["calib_images"] == 8
    assert report["miou_drop"] == pytest.approx(report["miou_float32"] - report["miou_int8"])
    assert report["file_ratio"] == report["file_bytes"]["int8"] / report["file_bytes"]["float32"] < 1
    assert report["latency"]["int8"]["latency_method"] == "onnxruntime" and report["latency_int8_ms"] > 0
    assert report["gap8"]["latency_estimated"] is True
    assert report["kept_float"] == []
    assert abs(report["miou_drop"]) < 0.05


def test_task_quantize_end_to_end(trained, make_cfg, tmp_path, capsys):
    """task=quantize on a model.pt: the float32 ONNX at the images' own size scores what PyTorch
    scores on val with the same whole-image protocol."""
    from segnas import pipeline
    from segnas.evaluation import EvalProtocol, score_segmentation
    from segnas.metrics import SegmentationMetrics, scores_from_confusion
    from segnas.spaces import build, resolve_arch

    genotype = resolve_arch("deeplabv3plus-mobilenetv2")
    torch.manual_seed(0)
    net = build(genotype, 3).eval()
    model = save_network(tmp_path / "model.pt", genotype, 3, net)
    cfg = make_cfg(
        "task=quantize",
        f"checkpoint={model}",
        "data.num_classes=3",
        "data.val_size=3",
        "quantize.calib_images=4",
        "quantize.threads=1",
        "logger=csv",
        run_dir=tmp_path / "q",
    )
    summary = pipeline.run(cfg)
    report = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert summary["int8_miou"] == report["miou_int8"] and summary["task"] == "quantize"
    assert (tmp_path / "q" / "model.int8.onnx").is_file()
    # the closing lines name the deployable file
    assert f"    int8: {(tmp_path / 'q' / 'model.int8.onnx').resolve()}" in capsys.readouterr().out.splitlines()
    data = SyntheticDataModule(**{k: v for k, v in cfg.data.items() if k != "_target_"})
    data.setup()
    metric = SegmentationMetrics(3)
    with torch.no_grad():
        for batch in data.loader(data.eval_dataset("val"), train=False):
            score_segmentation(EvalProtocol("whole"), net, batch, metric)
    assert report["input_size"] == [int(cfg.data.image_size or cfg.data.crop_size)] * 2
    assert report["miou_float32"] == pytest.approx(scores_from_confusion(metric.compute())["mIoU"], abs=1e-6)


def test_task_quantize_needs_a_checkpoint(make_cfg):
    from segnas import pipeline

    with pytest.raises(ConfigError, match="task=quantize needs checkpoint="):
        pipeline.run(make_cfg("task=quantize"))
    with pytest.raises(ConfigError, match="quantize.max_drop=2"):
        pipeline.run(make_cfg("task=quantize", "checkpoint=x", "quantize.max_drop=2"))


@pytest.mark.parametrize(
    ("mode", "train", "expected"),
    [("manual", 40, (32,)), ("manual", 10, (10,)), ("auto", 64, (32, 32)), ("auto", 10, (5, 5)), ("auto", 2, (1, 1))],
)
def test_image_counts_fit_a_small_train_split(mode, train, expected):
    plan = Deployment(SIZE, QuantizeOptions(), calib_images=32, select_images=32, mode=mode)
    assert image_counts(plan, train) == expected


def test_image_counts_refuse_what_cannot_work():
    with pytest.raises(QuantizeError, match="quantize.mode=auto: needs 2 training images at least"):
        image_counts(Deployment(SIZE, QuantizeOptions(), mode="auto"), 1)


def test_int8_is_scored_on_the_val_images_the_run_reports_on(trained):
    """A search that selected on val images (FMAS: reserve_val) leaves them out of its report; the
    int8 scores leave them out too."""
    _, data = trained
    data.reserve_val([0, 2])
    try:
        assert reported_val(data, None).indices == [1, 3, 4, 5]
        assert reported_val(data, 2).indices == [1, 3]
    finally:
        data.reserved_val = None
