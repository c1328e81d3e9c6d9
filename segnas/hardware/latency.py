"""Measured latency: ``repeats`` groups of ``runs`` timed forward passes after one warm-up, on a
fixed thread count; the latency is the median of the groups' medians, and the groups' medians
travel with it (``latency_repeat_ms``, their range ``latency_spread_ms``) so that a reader can see
how far one measurement can be trusted (a busy machine shows up as a wide spread, where a single
median would hide it).

A target says how it measures (``latency_method``) and whether its number is an estimate, so a
lookup-table target for a device that is not attached can plug in next to these and still be
labelled as an estimate wherever it is shown.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segnas.errors import ConfigError
from segnas.hardware.onnx_export import export_onnx


class LatencyTarget:
    """Where and how latency is measured; subclasses implement :meth:`measure`."""

    name: str = "target"
    method: str = "none"
    estimated: bool = False

    def __init__(
        self, name: str, threads: int = 2, warmup: int = 5, runs: int = 10, batch: int = 1, repeats: int = 3
    ) -> None:
        if threads < 1 or warmup < 0 or runs < 1 or batch < 1 or repeats < 1:
            raise ConfigError(
                f"hardware={name}: need threads >= 1, warmup >= 0, runs >= 1, batch >= 1, repeats >= 1; got "
                f"threads={threads}, warmup={warmup}, runs={runs}, batch={batch}, repeats={repeats}"
            )
        self.name = name
        self.threads = threads
        self.warmup = warmup
        self.runs = runs
        self.batch = batch
        self.repeats = repeats

    def measure(self, model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
        raise NotImplementedError

    def _time(self, step: Callable[[], Any], sync: Callable[[], None] = lambda: None) -> list[float]:
        """The median wall time of ``step`` in milliseconds of each of ``repeats`` groups of ``runs``
        calls, after ``warmup`` calls."""
        for _ in range(self.warmup):
            step()
        sync()
        medians = []
        for _ in range(self.repeats):
            times = []
            for _ in range(self.runs):
                start = time.perf_counter()
                step()
                sync()
                times.append((time.perf_counter() - start) * 1000.0)
            medians.append(statistics.median(times))
        return medians

    def _result(self, medians: list[float], device: str) -> dict[str, Any]:
        """The record of one measurement from its groups' medians (one value for an estimate)."""
        return {
            "latency_ms": statistics.median(medians),
            "latency_repeat_ms": [round(m, 4) for m in medians],
            "latency_spread_ms": max(medians) - min(medians),
            "latency_target": self.name,
            "latency_method": self.method,
            "latency_estimated": self.estimated,
            "latency_runs": self.runs,
            "latency_repeats": len(medians),
            "threads": self.threads,
            "device": device,
        }


class TorchLatency(LatencyTarget):
    """Eager PyTorch on ``device`` (``cpu`` or ``cuda[:i]``) under ``no_grad`` in eval mode.

    A copy of the model is timed, so the caller's model keeps its device and train/eval mode.
    ``threads`` fixes ``torch.set_num_threads`` for the measurement and is restored afterwards.
    """

    method = "torch"

    def __init__(
        self,
        name: str = "cpu",
        device: str = "cpu",
        threads: int = 2,
        warmup: int = 5,
        runs: int = 10,
        batch: int = 1,
        repeats: int = 3,
    ) -> None:
        super().__init__(name, threads, warmup, runs, batch, repeats)
        self.device = device

    def measure(self, model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"hardware={self.name}: device '{self.device}' asked for but CUDA is not available "
                "on this machine; pick hardware=cpu or hardware=onnx_cpu instead of hardware=gpu"
            )
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        net = copy.deepcopy(model).to(device).eval()
        x = torch.randn(self.batch, 3, *input_size, device=device)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            # float32 as the target runs it, also when measured inside a search unit under bf16-mixed
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                medians = self._time(lambda: net(x), sync)
        finally:
            torch.set_num_threads(previous)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        return self._result(medians, f"{self.device} ({name})" if device.type == "cuda" else "cpu")


class OnnxRuntimeLatency(LatencyTarget):
    """ONNX Runtime's CPU provider on the exported model, ``intra_op_num_threads=threads``."""

    method = "onnxruntime"

    def __init__(
        self,
        name: str = "onnx_cpu",
        threads: int = 2,
        warmup: int = 5,
        runs: int = 10,
        batch: int = 1,
        repeats: int = 3,
    ) -> None:
        super().__init__(name, threads, warmup, runs, batch, repeats)

    def measure(self, model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, Path(tmp) / "model.onnx", input_size)
            return self.measure_file(path, input_size)

    def measure_file(self, path: str | Path, input_size: tuple[int, int]) -> dict[str, Any]:
        """The latency of an ONNX file already written (e.g. an int8 one) at ``input_size``."""
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ConfigError(
                f"hardware={self.name} needs onnxruntime: pip install onnxruntime, or pick hardware=cpu"
            ) from err

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: torch.randn(self.batch, 3, *input_size).numpy()}
        return self._result(self._time(lambda: session.run(None, feed)), "cpu")
