"""``hardware=onnx_cpu_int8``: the measured latency of a network as the device runs it, int8.

Each network is exported, quantized as :mod:`segnas.quantize.static` does (QDQ, per-channel
weights) and timed by ONNX Runtime's CPU provider like ``hardware=onnx_cpu``. The activation
ranges are calibrated on a few seeded random images: the kernels ONNX Runtime picks, and so the
time, depend on the graph and the data types, not on the ranges' values (what the ranges do to
accuracy is :mod:`segnas.quantize.scoring`'s). int8 does not speed every network alike, so a
search priced by this target ranks networks as the int8 device does, not as float32 would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segnas.hardware.latency import OnnxRuntimeLatency
from segnas.hardware.onnx_export import export_onnx
from segnas.quantize.calibration import ImageCalibration
from segnas.quantize.static import QuantizeOptions, quantize_static


class OnnxRuntimeInt8Latency(OnnxRuntimeLatency):
    """ONNX Runtime's CPU provider on the int8 (QDQ, per-channel) export of the model."""

    method = "onnxruntime-int8"

    def __init__(
        self,
        name: str = "onnx_cpu_int8",
        threads: int = 2,
        warmup: int = 5,
        runs: int = 10,
        batch: int = 1,
        repeats: int = 3,
        calib_images: int = 2,
        per_channel: bool = True,
    ) -> None:
        super().__init__(name, threads, warmup, runs, batch, repeats)
        self.calib_images = calib_images
        self.per_channel = per_channel

    def measure(self, model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(0)
        images = [torch.randn(3, *input_size, generator=generator) for _ in range(self.calib_images)]
        with tempfile.TemporaryDirectory() as tmp:
            float_path = export_onnx(model, Path(tmp) / "model.onnx", input_size)
            int8_path = Path(tmp) / "model.int8.onnx"
            quantize_static(
                float_path,
                int8_path,
                ImageCalibration(images, input_size),
                QuantizeOptions(per_channel=self.per_channel),
            )
            return self.measure_file(int8_path, input_size)
