"""A float32 and an int8 ONNX Runtime session scored by one whole-image evaluator.

Both files take the deployment size they were exported at; every image is resized to it, and
the logits are resized back to the image's own size and scored against its original mask
(:class:`segnas.evaluation.EvalProtocol`, ``whole``), so the two scores differ only by what
quantization changed. Beside the two mIoUs: each class's IoU change and the share of pixels whose
predicted class changed (labelled or not: what a user would see on the device's output).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segnas.evaluation import EvalProtocol, size_groups
from segnas.metrics import SegmentationMetrics, per_class_iou, predicted_classes, scores_from_confusion
from segnas.quantize.calibration import deployment_input
from segnas.quantize.static import QuantizeError

#: |ONNX - PyTorch| <= ATOL + RTOL * max|PyTorch| on the float32 logits: what "the exported
#: float32 file is the trained network" means (the TorchScript exporter matches to ~1e-6).
ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-3


def session(path: str | Path, threads: int = 2) -> Any:
    """An ONNX Runtime CPU session on ``path`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxSegmenter:
    """An ONNX Runtime session called like a network on (N, 3, H, W) torch images: they are
    resized to ``input_size`` (the size the file was exported at) and fed one at a time (the
    file's batch axis is dynamic, but one image is what a device runs); returns the logits at
    ``input_size`` (the evaluator resizes them to each image's size)."""

    def __init__(self, onnx_session: Any, input_size: tuple[int, int]) -> None:
        self.session = onnx_session
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.input_name = onnx_session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = deployment_input(images, self.input_size).numpy()
        outputs = [self.session.run(None, {self.input_name: batch[i : i + 1]})[0] for i in range(batch.shape[0])]
        return torch.from_numpy(np.concatenate(outputs, axis=0))


def check_export(
    net: nn.Module, float_session: Any, images: Sequence[torch.Tensor], input_size: tuple[int, int]
) -> float:
    """The largest |ONNX - PyTorch| over ``images`` at ``input_size``; raises QuantizeError when
    it exceeds ``ONNX_ATOL + ONNX_RTOL * max|PyTorch|`` (the export is not the trained network)."""
    segmenter = OnnxSegmenter(float_session, input_size)
    worst = 0.0
    was_training = net.training
    net.eval()
    try:
        for image in images:
            x = deployment_input(image, input_size)
            with torch.no_grad():
                expected = net(x)
            expected = (expected[0] if isinstance(expected, tuple | list) else expected).float()
            error = float((segmenter(x) - expected).abs().max())
            bound = ONNX_ATOL + ONNX_RTOL * float(expected.abs().max())
            if error > bound:
                raise QuantizeError(
                    f"the float32 ONNX export differs from the PyTorch network by {error:.3g} on the logits "
                    f"(tolerance {ONNX_ATOL:g} + {ONNX_RTOL:g} x max|logit| = {bound:.3g})"
                )
            worst = max(worst, error)
    finally:
        net.train(was_training)
    return worst


def score_pair(
    float_net: OnnxSegmenter,
    int8_net: OnnxSegmenter,
    batches: Iterable[dict[str, Any]],
    class_names: Sequence[str],
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Both sessions on every image of ``batches`` (evaluation batches: whole images, padded
    with their sizes) against the original masks: their scores, each class's IoU in both and
    its change, and the share of pixels whose class changed."""
    protocol = EvalProtocol("whole")
    num_classes = len(class_names)
    metrics = {name: SegmentationMetrics(num_classes, ignore_index) for name in ("float32", "int8")}
    changed = pixels = images = 0
    for batch in batches:
        for group, targets in size_groups(batch):
            classes = {
                name: predicted_classes(protocol.predict(net, group))
                for name, net in (("float32", float_net), ("int8", int8_net))
            }
            for name, metric in metrics.items():
                metric.update(classes[name], targets["mask"])
            changed += int((classes["float32"] != classes["int8"]).sum())
            pixels += classes["float32"].numel()
            images += group.shape[0]
    if images == 0:
        raise QuantizeError("no images to score the float32 and int8 networks on")
    confusion = {name: metric.compute() for name, metric in metrics.items()}
    scores = {name: scores_from_confusion(matrix) for name, matrix in confusion.items()}
    iou = {name: per_class_iou(matrix) for name, matrix in confusion.items()}
    per_class = {
        class_name: {
            "float32": _number(iou["float32"][k]),
            "int8": _number(iou["int8"][k]),
            "change": _number(iou["int8"][k] - iou["float32"][k]),
        }
        for k, class_name in enumerate(class_names)
    }
    return {
        "images": images,
        "float32": scores["float32"],
        "int8": scores["int8"],
        "miou_change": scores["int8"]["mIoU"] - scores["float32"]["mIoU"],
        "per_class_iou": per_class,
        "changed_pixels": changed / max(pixels, 1),
    }


def _number(value: torch.Tensor) -> float | None:
    """A float, or None for a class absent from both ground truth and predictions (JSON has no NaN)."""
    value = float(value)
    return None if value != value else value
