"""What an architecture costs: parameters, MACs and latency on a hardware target."""

from __future__ import annotations

from typing import Any

from torch import nn

from segnas.hardware.costs import count_macs, count_params
from segnas.hardware.gap8 import Gap8Latency
from segnas.hardware.latency import LatencyTarget, OnnxRuntimeLatency, TorchLatency
from segnas.hardware.onnx_export import export_onnx

MACS_NOTE = "MACs = FLOPs/2 from torch FlopCounterMode"


def profile(
    model: nn.Module, input_size: tuple[int, int], target: LatencyTarget | None = None
) -> dict[str, Any]:
    """Params, MACs (batch 1) and, when a target is given, its latency fields, in one flat dict
    ready for ``summary.json`` and loggers. Without a target the latency fields are absent."""
    size = (int(input_size[0]), int(input_size[1]))
    result: dict[str, Any] = {
        "params": count_params(model),
        "macs": count_macs(model, size),
        "macs_note": MACS_NOTE,
        "input_size": list(size),
    }
    if target is not None:
        result.update(target.measure(model, size))
    return result


__all__ = [
    "MACS_NOTE",
    "Gap8Latency",
    "LatencyTarget",
    "OnnxRuntimeLatency",
    "TorchLatency",
    "count_macs",
    "count_params",
    "export_onnx",
    "profile",
]
