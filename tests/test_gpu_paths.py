"""What the code read of issue 32 found on the GPU paths, shown on the CPU.

A search unit runs inside Lightning's ``training_step``, which ``trainer.precision=bf16-mixed``
(the ``gpu`` trainer's default) wraps in autocast. FMAS's int8 score and its latency objectives
export and time networks there. CPU autocast stands in for the GPU's: it is the same mechanism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segnas.hardware.latency import OnnxRuntimeLatency, TorchLatency
from segnas.hardware.onnx_export import export_onnx

pytest.importorskip("onnxruntime")


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1)).eval()


#: The dtype of each forward's convolution output; module level, as TorchLatency times a deep copy.
SEEN: list[torch.dtype] = []


class AutocastProbe(nn.Module):
    """Records the dtype its convolution ran in (bf16 under autocast, float32 without)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        SEEN.append(out.dtype)
        return out


def test_an_export_under_bf16_autocast_is_a_float32_graph_onnx_runtime_runs(tmp_path: Path) -> None:
    """Before the fix the traced graph held Cast-to-bfloat16 nodes and ONNX Runtime refused to
    load it (``Type 'tensor(bfloat16)' ... of operator (Conv) is invalid``)."""
    import onnx
    import onnxruntime as ort

    net = small_net()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        path = export_onnx(net, tmp_path / "net.onnx", (16, 16))
    graph = onnx.load(str(path)).graph
    assert not [node for node in graph.node if node.op_type == "Cast"], "autocast's casts were exported"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 16, 16)
    (logits,) = session.run(None, {"image": x.numpy()})
    assert logits.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(logits, net(x).numpy(), atol=1e-5)


def test_onnx_runtime_latency_under_bf16_autocast_measures() -> None:
    """hardware=onnx_cpu as FMAS's latency objective in a bf16-mixed search exports in the unit."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = OnnxRuntimeLatency(threads=1, warmup=1, runs=2, repeats=1).measure(small_net(), (16, 16))
    assert result["latency_ms"] > 0


def test_torch_latency_times_float32_inside_an_autocast_region() -> None:
    """A candidate's latency must not depend on whether it was measured inside a bf16-mixed
    search unit (the winner's is measured outside one): the timed passes run in float32."""
    SEEN.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        TorchLatency(threads=1, warmup=1, runs=2, repeats=1).measure(AutocastProbe(), (8, 8))
    assert SEEN and set(SEEN) == {torch.float32}, SEEN


def test_fmas_confusion_keeps_its_matrix_where_the_batches_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """FMAS preloads its validation batches on the search device and scores sub-networks there;
    the confusion matrix was built on the CPU, so on a GPU its update would add CUDA counts into
    a CPU state. ``meta`` stands in for the GPU (a device that is not the CPU)."""
    from segnas.searchers.fmas import scoring

    devices: list[tuple[torch.device, torch.device]] = []

    class Recorder(scoring.SegmentationMetrics):
        def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
            devices.append((self.confmat.device, preds.device))

        def compute(self) -> torch.Tensor:
            return self.confmat

    monkeypatch.setattr(scoring, "SegmentationMetrics", Recorder)
    batch = {
        "image": torch.zeros(2, 3, 8, 8, device="meta"),
        "mask": torch.zeros(2, 8, 8, dtype=torch.long, device="meta"),
    }
    scoring.confusion(lambda x: torch.zeros(x.shape[0], 5, 8, 8, device=x.device), [batch], 5)
    assert devices and all(state == preds for state, preds in devices), devices
