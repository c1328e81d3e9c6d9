"""Scoring a sub-network as an int8 device runs it (``searcher.objectives`` with ``miou_int8``).

A sub-network that scores well in float32 need not after post-training quantization (int8 does
not hurt every network alike), so an int8 target (GAP8) should be searched on its int8 score.
Each scored sub-network, as the float32 score left it (BatchNorm recalibrated, eval mode), is
exported to ONNX at the priced size, quantized as :mod:`segnas.quantize.static` does (QDQ,
int8 per-channel weights, uint8 activations, MinMax ranges) with the calibration images BatchNorm
recalibration uses, and scored by ONNX Runtime on the float32 score's validation batches with the
same protocol and metric. Images whose size is not the priced one are resized to it and the
logits back (:class:`~segnas.quantize.scoring.OnnxSegmenter`), as a device at that size sees them.

What the int8 score reuses of the float32 one is its inputs (the network it prepared, its
regrouped validation batches, its calibration images), never its computation: the float32 score
stays the torch score it was, the same numbers bit for bit with or without ``miou_int8``. What it
costs per sub-network (an export and ONNX Runtime's quantization, seconds even for small networks)
is measured in BENCHMARKS.md ("int8 ranking over one FMAS search").
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from segnas.evaluation import EvalProtocol
from segnas.hardware.onnx_export import export_onnx
from segnas.metrics import scores_from_confusion
from segnas.quantize.calibration import ImageCalibration
from segnas.quantize.scoring import OnnxSegmenter, session
from segnas.quantize.static import QuantizeOptions, quantize_static
from segnas.searchers.fmas.scoring import Scorer, confusion


class Int8Scorer:
    """Scores prepared networks after int8 quantization, on ``scorer``'s validation batches by its
    protocol and metric, calibrated on ``calib_images`` (each (3, H, W)) at ``input_size``. ONNX
    Runtime runs with torch's intra-op threads, so both scores use the cores alike."""

    def __init__(self, scorer: Scorer, calib_images: Sequence[torch.Tensor], input_size: tuple[int, int]) -> None:
        # ONNX Runtime reads host memory in C order: the float32 score's batches (on its device,
        # channels-last) copied once
        self.val_batches = [{key: host(value) for key, value in batch.items()} for batch in scorer.val_batches]
        self.calibration = ImageCalibration([host(image) for image in calib_images], input_size)
        self.num_classes, self.ignore_index = scorer.num_classes, scorer.ignore_index
        self.protocol: EvalProtocol = scorer.protocol
        self.input_size = input_size
        self.threads = torch.get_num_threads()
        #: images one score runs: the calibration pass and the validation subset
        self.images_per_score = len(self.calibration) + sum(b["image"].shape[0] for b in self.val_batches)

    def score(self, net: nn.Module) -> dict[str, float]:
        """``miou_int8`` and ``pixel_acc_int8`` of ``net`` (as it is: eval mode, its statistics)."""
        with tempfile.TemporaryDirectory() as tmp:
            float_path = export_onnx(net, Path(tmp) / "subnet.onnx", self.input_size)
            int8_path = Path(tmp) / "subnet.int8.onnx"
            self.calibration.rewind()
            quantize_static(float_path, int8_path, self.calibration, QuantizeOptions())
            segmenter = OnnxSegmenter(session(int8_path, self.threads), self.input_size)
        matrix = confusion(segmenter, self.val_batches, self.num_classes, self.ignore_index, self.protocol)
        scores = scores_from_confusion(matrix)
        return {"miou_int8": scores["mIoU"], "pixel_acc_int8": scores["pixel_acc"]}


def host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the CPU in C order (what ONNX Runtime's inputs are made of)."""
    return tensor.cpu().contiguous()
