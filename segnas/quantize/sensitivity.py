"""Layers that quantize badly: each compute layer's error when it alone is int8, and the
automatic mode's search for the fewest of them to keep in float.

**Sensitivity.** Each compute layer (:data:`~segnas.quantize.static.COMPUTE_OPS`) of the
pre-processed float graph is quantized alone (its weights, its input and output activations,
the rest float32) and run on a few probe images against the float32 graph: the relative L2 error
of the logits ranks the layers (it is continuous, so no ties), and the share of pixels whose class
changes says what a user would see. One probe per layer is what the question asks; what makes it
affordable is that the activation ranges do not depend on which layers are quantized, so they are
calibrated once (ONNX Runtime's calibration cache) and every probe only inserts its Q/DQ pairs,
writes the file and runs the probes. ``onnxruntime.quantization.qdq_loss_debug`` was the other
candidate, but it compares each tensor inside one fully quantized graph, where a layer's error
includes every error upstream of it: it does not say which layer to keep.

**Automatic mode.** The most sensitive layers are kept in float, by rank, until the mIoU drop on
held-out train images is within the bound. The kept count grows 0, 1, 2, 4, 8, ... and is then
bisected between the last count that failed and the first that passed: a few sensitive layers
are the usual case (an ASPP head, one outlier), and doubling finds a small count in a few tries,
where greedy one-at-a-time growth costs a quantization and a scoring pass per layer and bisecting
[0, n] from the start spends its first tries on counts that keep half the network in float. The
search assumes the drop shrinks as layers are kept; where it does not, the count found passes
the bound but may not be the smallest.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segnas.evaluation import EvalProtocol, score_segmentation
from segnas.metrics import SegmentationMetrics, scores_from_confusion
from segnas.quantize.static import COMPUTE_OPS, QuantizeOptions, quantize_static

SENSITIVITY_FILE = "sensitivity.csv"
#: calibration images the sensitivity probes run on (the error is against float32: no labels needed)
PROBE_IMAGES = 4
#: layers listed in ``quantize.json`` (all of them are in sensitivity.csv)
TOP_LAYERS = 5
MEASURE = "relative L2 error of the logits when only this layer is int8, on the probe images"


@dataclass(frozen=True)
class LayerError:
    """One compute layer's error when it alone is quantized; ``rank`` 1 is the most sensitive."""

    node: str
    op: str
    error: float
    changed_pixels: float
    rank: int = 0


def output_error(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> tuple[float, float]:
    """(relative L2 error, share of pixels whose class changed) of ``outputs`` against
    ``reference``, each a list of (1, C, H, W) logits over the same probe images."""
    difference = sum(float(np.square(out - ref).sum()) for out, ref in zip(outputs, reference))
    norm = sum(float(np.square(ref).sum()) for ref in reference)
    changed = sum(int((out.argmax(1) != ref.argmax(1)).sum()) for out, ref in zip(outputs, reference))
    pixels = sum(ref.shape[0] * ref.shape[2] * ref.shape[3] for ref in reference)
    return (difference / max(norm, 1e-30)) ** 0.5, changed / max(pixels, 1)


def _logits(onnx_session: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    return [onnx_session.run(None, feed)[0] for feed in feeds]


def layer_sensitivity(
    prepared: str | Path,
    calibration_cache: str | Path,
    options: QuantizeOptions,
    probes: Sequence[dict[str, np.ndarray]],
    open_session: Callable[[Path], Any],
    exclude: Iterable[str] = (),
) -> list[LayerError]:
    """Every compute layer of ``prepared`` (a pre-processed float graph) but ``exclude``'s
    (layers kept in float anyway), quantized alone with the ranges of ``calibration_cache``
    (written by an earlier :func:`~segnas.quantize.static.quantize_static` of the same graph)
    and run on ``probes`` (``{input: (1, 3, h, w)}`` feeds) by ``open_session``; most sensitive
    first."""
    import onnx

    graph = onnx.load(str(prepared)).graph
    skip = set(exclude)
    layers = [(node.name, node.op_type) for node in graph.node if node.op_type in COMPUTE_OPS and node.name not in skip]
    reference = _logits(open_session(Path(prepared)), probes)
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        probe_path = Path(tmp) / "probe.onnx"
        for name, op in layers:
            quantize_static(prepared, probe_path, None, options, only=[name], calibration_cache=calibration_cache)
            error, changed = output_error(reference, _logits(open_session(probe_path), probes))
            errors.append(LayerError(name, op, error, changed))
    ranked = sorted(errors, key=lambda layer: layer.error, reverse=True)
    return [dataclasses.replace(layer, rank=rank) for rank, layer in enumerate(ranked, start=1)]


def write_sensitivity(layers: Sequence[LayerError], path: str | Path) -> Path:
    """``layers`` as CSV (node, op, error, changed_pixels, rank), in their order."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in dataclasses.fields(LayerError)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(layer) for layer in layers)
    return path


def sensitivity_summary(layers: Sequence[LayerError], probe_images: int) -> dict[str, Any]:
    """What ``quantize.json`` says of the report: how it was measured and the top layers."""
    return {
        "file": SENSITIVITY_FILE,
        "measure": MEASURE,
        "probe_images": probe_images,
        "layers": len(layers),
        "top": [dataclasses.asdict(layer) for layer in layers[:TOP_LAYERS]],
    }


def keeping(options: QuantizeOptions, nodes: Sequence[str]) -> QuantizeOptions:
    """``options`` with ``nodes`` (exact names, wildcards escaped) kept in float as well."""
    return dataclasses.replace(options, keep_float=(*options.keep_float, *(glob.escape(node) for node in nodes)))


@dataclass(frozen=True)
class KeepSearch:
    """What the automatic mode found: how many ranked layers to keep, every (count, drop) tried
    in order, and whether the count found is within the bound (else it is the best count tried)."""

    kept: int
    trail: list[tuple[int, float]]
    reached: bool


def smallest_kept(drop: Callable[[int], float], candidates: int, max_drop: float) -> KeepSearch:
    """The fewest of ``candidates`` ranked layers to keep in float for ``drop(count) <= max_drop``:
    counts 0, 1, 2, 4, ... up to ``candidates``, then bisection between the last count that
    failed and the first that passed (see the module docstring for why). When even every
    candidate kept fails, the count with the smallest drop (fewest layers on a tie)."""
    drops: dict[int, float] = {}

    def passes(count: int) -> bool:
        if count not in drops:
            drops[count] = drop(count)
        return drops[count] <= max_drop

    failed, count = -1, 0
    while not passes(count):
        if count >= candidates:
            best = min(drops, key=lambda k: (drops[k], k))
            return KeepSearch(best, list(drops.items()), reached=False)
        failed, count = count, min(candidates, max(1, 2 * count))
    while count - failed > 1:
        middle = (failed + count) // 2
        failed, count = (failed, middle) if passes(middle) else (middle, count)
    return KeepSearch(count, list(drops.items()), reached=True)


def miou(net: Callable[[Any], Any], batches: Iterable[dict[str, Any]], num_classes: int, ignore_index: int) -> float:
    """``net``'s mIoU over evaluation ``batches`` (whole images, original masks)."""
    protocol = EvalProtocol("whole")
    metrics = SegmentationMetrics(num_classes, ignore_index)
    for batch in batches:
        score_segmentation(protocol, net, batch, metrics, ignore_index)
    return scores_from_confusion(metrics.compute())["mIoU"]
