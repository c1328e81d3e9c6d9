"""ONNX export of a built network, checked before it is handed on.

The exporter is torch's TorchScript-based one (``dynamo=False``). On torch 2.14 it exports the
DeepLabV3+ presets in about a second at opset 17 and matches torch to ~1e-7; the ``torch.export``
based one (``dynamo=True``, the default since torch 2.9) takes ~25× longer on the same model and
cannot lower its graph to opset 17 (it falls back to 18 with a version-converter error logged).
``dynamo=True`` stays available for models the tracer cannot follow.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    opset: int = 17,
    in_channels: int = 3,
    dynamo: bool = False,
) -> Path:
    """Write ``model`` (in eval mode, batch axis dynamic) to ``path`` and check the file loads.

    Raises ImportError with an install hint when ``onnx`` is missing, so that callers can report
    "ONNX export skipped" instead of failing a run. The model is put back in its previous mode.

    Autocast is turned off for the export: called inside a search unit under
    ``trainer.precision=bf16-mixed`` (FMAS's int8 score, an ONNX Runtime latency objective), the
    tracer would otherwise record autocast's casts and write a bf16 graph ONNX Runtime refuses.
    """
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the 'onnx' package: pip install onnx (or segnas[onnx])") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(1, in_channels, *input_size, device=device)
    # The two exporters spell a dynamic batch axis differently; each warns on the other's.
    if dynamo:
        dynamic: dict = {"dynamic_shapes": ({0: torch.export.Dim.DYNAMIC},)}
    else:
        dynamic = {"dynamic_axes": {"image": {0: "batch"}, "logits": {0: "batch"}}}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=dynamo,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                **dynamic,
            )
    finally:
        model.train(was_training)
    onnx.checker.check_model(str(path))
    return path
