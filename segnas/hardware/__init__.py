"""What an architecture costs: parameters, MACs and latency on a hardware target."""

from __future__ import annotations

from typing import Any

from torch import nn

from segnas.hardware.costs import MAC_CONVENTIONS, count_macs, count_macs_by_convention, count_params
from segnas.hardware.gap8 import Gap8Latency
from segnas.hardware.latency import LatencyTarget, OnnxRuntimeLatency, TorchLatency
from segnas.hardware.onnx_export import export_onnx

MACS_NOTE = "MACs = FLOPs/2 from torch FlopCounterMode"
MACS_TFPROF_NOTE = (
    "macs_tfprof: Multiply-Adds as TensorFlow 1.x's profiler counts them (dilated convs over "
    "SpaceToBatchND's padded grid, adds and pooling windows included), to compare with TF papers"
)


def profile(model: nn.Module, input_size: tuple[int, int], target: LatencyTarget | None = None) -> dict[str, Any]:
    """Params, MACs (batch 1; also in tfprof's convention, see :func:`count_macs`) and, when a
    target is given, its latency fields, in one flat dict ready for ``summary.json`` and loggers.
    Without a target the latency fields are absent."""
    size = (int(input_size[0]), int(input_size[1]))
    macs = count_macs_by_convention(model, size)
    result: dict[str, Any] = {
        "params": count_params(model),
        "macs": macs["torch"],
        "macs_note": MACS_NOTE,
        "macs_tfprof": macs["tfprof"],
        "macs_tfprof_note": MACS_TFPROF_NOTE,
        "input_size": list(size),
    }
    if target is not None:
        result.update(target.measure(model, size))
    return result


__all__ = [
    "MACS_NOTE",
    "MACS_TFPROF_NOTE",
    "MAC_CONVENTIONS",
    "Gap8Latency",
    "LatencyTarget",
    "OnnxRuntimeLatency",
    "TorchLatency",
    "count_macs",
    "count_macs_by_convention",
    "count_params",
    "export_onnx",
    "profile",
]
