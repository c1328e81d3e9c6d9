"""Post-training static int8 quantization with ONNX Runtime (``onnxruntime.quantization``).

The recipe is the one ONNX Runtime documents for CNNs on CPUs and the one the known traps call
for: the float model is pre-processed first (``quant_pre_process``: shape inference and graph
optimisation, so Conv+BatchNorm are folded before ranges are collected), then quantized in
**QDQ** format (QuantizeLinear/DequantizeLinear pairs around each quantized op: the format every
current runtime and NNTool-style converter reads), weights **per channel** (per-tensor scales
collapse depthwise convolutions of MobileNets) as signed int8, activations as unsigned int8
(the u8s8 kernels of x86 CPUs). Activation ranges come from a calibration reader and a method
(MinMax, Entropy or Percentile).

Layers can be kept in float (``keep_float``: ONNX node names, shell wildcards allowed, e.g.
``/aspp/*``); :func:`float_compute_nodes` reads back from a quantized file which compute layers
were left in float, so what was asked is checked against what was written.
"""

from __future__ import annotations

import fnmatch
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segnas.errors import ConfigError

#: The calibration methods ``quantize.calibration`` accepts, by ONNX Runtime's names.
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: Ops that do the arithmetic of a network (the ones a sensitivity report or keep_float is about).
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Percentile calibration's default, as ONNX Runtime's ``Percentile`` calibrator has it.
PERCENTILE = 99.999


class QuantizeError(ConfigError):
    """A network cannot be quantized as asked: an op ONNX Runtime does not quantize, a keep_float
    pattern that matches nothing, an empty calibration set, a model that does not export."""


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize (``quantize.*``). ``keep_float``: ONNX node names or shell patterns of the
    layers left in float32."""

    calibration: str = "minmax"
    per_channel: bool = True
    keep_float: tuple[str, ...] = field(default_factory=tuple)
    #: 7-bit weights: for CPUs without VNNI, whose u8s8 products can saturate (ORT's advice)
    reduce_range: bool = False
    percentile: float = PERCENTILE

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise QuantizeError(
                f"quantize.calibration={self.calibration}: expected one of {', '.join(CALIBRATION_METHODS)}"
            )


def _onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime.quantization as quantization
    except ImportError as err:  # pragma: no cover - the extra is installed with segnas[onnx]
        raise QuantizeError("int8 quantization needs onnx and onnxruntime: pip install 'segnas[onnx]'") from err
    return onnx, quantization


def preprocess(float_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime's pre-processing (symbolic shape inference, graph optimisation folding
    BatchNorm into Conv) written to ``out_path``: the graph ranges are calibrated on."""
    _, quantization = _onnx()
    out_path = Path(out_path)
    try:
        quantization.quant_pre_process(str(float_path), str(out_path), skip_symbolic_shape=False)
    except Exception as err:
        raise QuantizeError(f"{float_path}: ONNX Runtime's quantization pre-processing failed ({err})") from err
    return out_path


def compute_nodes(model: Any) -> list[str]:
    """Names of the graph's compute layers (:data:`COMPUTE_OPS`) in graph order."""
    return [node.name for node in model.graph.node if node.op_type in COMPUTE_OPS]


def matched_nodes(model: Any, patterns: Sequence[str], key: str = "quantize.keep_float") -> list[str]:
    """The nodes of ``model`` (any op) whose names match one of ``patterns`` (shell wildcards);
    a pattern that matches nothing is an error naming it and a few of the graph's compute layers."""
    names = [node.name for node in model.graph.node]
    matched: dict[str, None] = {}
    for pattern in patterns:
        hits = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            examples = ", ".join(compute_nodes(model)[:4])
            raise QuantizeError(
                f"{key}: {pattern!r} matches no node of the graph (ONNX node names, wildcards allowed, e.g. {examples})"
            )
        matched.update(dict.fromkeys(hits))
    return list(matched)


def unquantizable_nodes(model: Any, allowed: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(node name, op type) of the layers that carry float weights but that ONNX Runtime has no
    quantizer for: they would silently stay float32 in the int8 file. ``allowed`` are nodes the
    user keeps in float on purpose."""
    _, quantization = _onnx()
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    known = set(QDQRegistry) | set(QLinearOpsRegistry)
    weights = {init.name for init in model.graph.initializer if len(init.dims) >= 2}
    allowed = set(allowed)
    return [
        (node.name, node.op_type)
        for node in model.graph.node
        if node.op_type not in known and node.name not in allowed and any(i in weights for i in node.input)
    ]


def quantize_static(
    float_path: str | Path,
    out_path: str | Path,
    reader: Any,
    options: QuantizeOptions,
    only: Sequence[str] | None = None,
    calibration_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Quantize ``float_path`` to int8 QDQ at ``out_path``; returns what was done (the nodes kept
    in float, the method). ``reader`` is an ``onnxruntime.quantization.CalibrationDataReader``;
    ``only``: quantize just these nodes (a sensitivity probe), else every node but ``keep_float``'s.
    ``calibration_cache``: ONNX Runtime's JSON of every tensor's range, written by the first call
    and read by the next ones instead of calibrating again (``reader`` may then be None): the ranges
    do not depend on which nodes are quantized, so many probes of one network calibrate once. A
    file already pre-processed (:func:`preprocess`) is not pre-processed again.

    Checked before calibrating: the keep_float patterns match, and no weighted op is one ONNX
    Runtime cannot quantize unless it is kept in float (named with its op type).
    """
    onnx, quantization = _onnx()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(float_path))
        prepared = Path(float_path)
        if not quantization.quant_utils.model_has_pre_process_metadata(model):
            prepared = preprocess(float_path, Path(tmp) / "prepared.onnx")
            model = onnx.load(str(prepared))
        kept = matched_nodes(model, options.keep_float)
        missing = unquantizable_nodes(model, allowed=kept)
        if missing:
            listed = ", ".join(f"{name} ({op})" for name, op in missing[:5])
            raise QuantizeError(
                f"{float_path}: ONNX Runtime cannot quantize {len(missing)} weighted layer(s): {listed}; keep them "
                "in float with quantize.keep_float=[...] (node names as listed) or change the architecture"
            )
        extra = {"CalibPercentile": options.percentile} if options.calibration == "percentile" else {}
        try:
            quantization.quantize_static(
                str(prepared),
                str(out_path),
                reader,
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=options.per_channel,
                reduce_range=options.reduce_range,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                nodes_to_quantize=list(only) if only is not None else None,
                nodes_to_exclude=kept or None,
                calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[options.calibration]),
                extra_options=extra,
                calibration_cache_path=str(calibration_cache) if calibration_cache is not None else None,
            )
        except QuantizeError:
            raise
        except Exception as err:
            raise QuantizeError(f"{float_path}: ONNX Runtime's static quantization failed ({err})") from err
    return {
        "format": "QDQ",
        "weights": "int8 per channel" if options.per_channel else "int8 per tensor",
        "activations": "uint8 per tensor",
        "calibration": options.calibration,
        "keep_float_patterns": list(options.keep_float),
        "kept_float": kept,
    }


def float_compute_nodes(path: str | Path) -> list[str]:
    """The compute layers (:data:`COMPUTE_OPS`) of a quantized file that run in float: those
    whose weight does not come out of a DequantizeLinear. Read from the graph, so it says what
    the file will do, whatever was asked."""
    onnx, _ = _onnx()
    model = onnx.load(str(path))
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in COMPUTE_OPS and len(node.input) > 1 and node.input[1] not in dequantized
    ]
