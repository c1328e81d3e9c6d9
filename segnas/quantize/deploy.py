"""One trained network to the int8 file a device runs, with its numbers: ``quantize.json``.

:func:`quantize_network` is what ``task=quantize`` does and what every ``task=search`` /
``task=train`` winner goes through when ``quantize.in_summary`` is on: export the float32
network at the deployment size and check the file against PyTorch, quantize it (the layers kept
in float as asked, or chosen by their sensitivity until the mIoU drop is within a bound), score
both files with one whole-image evaluator, time both with ONNX Runtime, size both, and estimate
GAP8's int8 latency.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from segnas.hardware.gap8 import Gap8Latency
from segnas.hardware.latency import OnnxRuntimeLatency
from segnas.hardware.onnx_export import export_onnx
from segnas.quantize.calibration import ImageCalibration, dataset_images
from segnas.quantize.scoring import ONNX_ATOL, ONNX_RTOL, OnnxSegmenter, check_export, score_pair, session
from segnas.quantize.sensitivity import (
    PROBE_IMAGES,
    SENSITIVITY_FILE,
    keeping,
    layer_sensitivity,
    miou,
    sensitivity_summary,
    smallest_kept,
    write_sensitivity,
)
from segnas.quantize.static import QuantizeError, QuantizeOptions, float_compute_nodes, preprocess, quantize_static

log = logging.getLogger(__name__)

FLOAT_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "quantize.json"
#: in the working folder: every layer int8 but keep_float's, and the activation ranges its calibration wrote
PLAIN_FILE = "plain.onnx"
RANGES_FILE = "ranges.json"


@dataclass(frozen=True)
class Deployment:
    """What to produce (``quantize.*``, typed): the deployment size, the images, the options."""

    input_size: tuple[int, int]
    options: QuantizeOptions
    calib_images: int = 32
    val_images: int | None = None
    threads: int = 2
    opset: int = 17
    mode: str = "manual"
    max_drop: float = 0.01
    select_images: int = 32
    sensitivity: bool = False


def quantize_network(
    net: nn.Module, datamodule: Any, plan: Deployment, out_dir: str | Path, gap8: Gap8Latency | None = None
) -> dict[str, Any]:
    """Write ``model.onnx`` (float32) and ``model.int8.onnx`` at ``plan.input_size`` and
    ``quantize.json`` to ``out_dir`` (and ``sensitivity.csv`` when asked or in auto mode); returns
    the report. ``datamodule`` gives the calibration images (seeded train images, evaluation
    transform), in auto mode the selection images (the next seeded train images), and the val
    images both files are scored on, read only once the int8 file is final. Raises
    :class:`~segnas.quantize.static.QuantizeError` (a named one-line error) before the slow steps
    when the network does not export, the export disagrees with PyTorch, a keep_float pattern
    matches nothing or an op cannot be quantized."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = plan.input_size
    datamodule.setup("validate")
    subsets = datamodule.train_subsets(*image_counts(plan, len(datamodule.source("train"))))
    calibration_images = dataset_images(subsets[0])
    calibration = ImageCalibration(calibration_images, size)
    float_path = exported(net, out_dir / FLOAT_FILE, size, plan.opset)
    float_session = session(float_path, plan.threads)
    export_error = check_export(net, float_session, calibration_images[:2], size)
    int8_path = out_dir / INT8_FILE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        quantized = quantize_static(
            float_path, work / PLAIN_FILE, calibration, plan.options, calibration_cache=work / RANGES_FILE
        )
        sections, chosen = _keep_sensitive(float_path, calibration, quantized, subsets, datamodule, plan, work)
        shutil.copyfile(chosen, int8_path)
    val = reported_val(datamodule, plan.val_images)
    scores = score_pair(
        OnnxSegmenter(float_session, size),
        OnnxSegmenter(session(int8_path, plan.threads), size),
        datamodule.loader(val, train=False),
        datamodule.class_names,
        datamodule.ignore_index,
    )
    timer = OnnxRuntimeLatency(threads=plan.threads)
    latency = {"float32": timer.measure_file(float_path, size), "int8": timer.measure_file(int8_path, size)}
    sizes = {"float32": os.path.getsize(float_path), "int8": os.path.getsize(int8_path)}
    report: dict[str, Any] = {
        "input_size": list(size),
        "onnx_check": {
            "max_abs_error": export_error,
            "tolerance": f"|onnx - torch| <= {ONNX_ATOL:g} + {ONNX_RTOL:g} * max|torch| on the float32 logits",
        },
        "quantization": {**quantized, "calib_images": len(calibration_images), "mode": plan.mode},
        "kept_float": float_compute_nodes(int8_path),
        **sections,
        "scores": scores,
        "miou_float32": scores["float32"]["mIoU"],
        "miou_int8": scores["int8"]["mIoU"],
        "miou_drop": scores["float32"]["mIoU"] - scores["int8"]["mIoU"],
        "latency": latency,
        "latency_float32_ms": latency["float32"]["latency_ms"],
        "latency_int8_ms": latency["int8"]["latency_ms"],
        "latency_ratio": latency["int8"]["latency_ms"] / latency["float32"]["latency_ms"],
        "file_bytes": sizes,
        "file_ratio": sizes["int8"] / sizes["float32"],
        "gap8": (gap8 or Gap8Latency()).measure(net, size),
        "files": {"float32": str(float_path), "int8": str(int8_path)},
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def image_counts(plan: Deployment, train_images: int) -> tuple[int, ...]:
    """How many training images calibrate (and, in auto mode, judge what to keep in float): as
    asked, or, when train has fewer than that, all of them (auto: shared in the asked proportion,
    at least one each), logged, so a small dataset is quantized instead of refused."""
    asked = (plan.calib_images, plan.select_images) if plan.mode == "auto" else (plan.calib_images,)
    if sum(asked) <= train_images:
        return asked
    if train_images < len(asked):
        raise QuantizeError(
            f"quantize.mode={plan.mode}: needs {len(asked)} training images at least "
            f"(calibration{' and selection' if len(asked) > 1 else ''}), train has {train_images}"
        )
    first = min(train_images - len(asked) + 1, max(1, round(train_images * asked[0] / sum(asked))))
    counts = (first, train_images - first)[: len(asked)] if len(asked) > 1 else (train_images,)
    log.info(
        "quantize: train has %d images, fewer than quantize.calib_images%s asks (%s): using %s",
        train_images,
        " + quantize.select_images" if len(asked) > 1 else "",
        " + ".join(map(str, asked)),
        " + ".join(map(str, counts)),
    )
    return counts


def reported_val(datamodule: Any, limit: int | None) -> Any:
    """The val images a run reports on (less those a search selected on, ``reserve_val``), the
    first ``limit`` of them when set: the int8 and float32 files are scored where the run's own
    val mIoU was."""
    val = datamodule.dataset("val")
    if limit is None or limit >= len(val):
        return val
    return datamodule.eval_dataset("val", val.indices[:limit])


def exported(net: nn.Module, path: Path, size: tuple[int, int], opset: int) -> Path:
    """``export_onnx``, with a network the exporter cannot follow refused as a named error."""
    try:
        return export_onnx(net, path, size, opset=opset)
    except ImportError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise QuantizeError(
            f"{type(net).__name__} does not export to ONNX at {size[0]}x{size[1]}, opset {opset} "
            f"(quantize.input_size, quantize.opset): {first}"
        ) from err


def _keep_sensitive(
    float_path: Path,
    calibration: ImageCalibration,
    quantized: dict[str, Any],
    subsets: list[Any],
    datamodule: Any,
    plan: Deployment,
    work: Path,
) -> tuple[dict[str, Any], Path]:
    """``sensitivity.csv`` beside ``float_path`` when asked or in auto mode and, in auto mode,
    the layers kept in float, judged on the selection images (``subsets[1]``); returns the
    report's ``sensitivity`` and ``auto`` sections and the int8 file chosen in ``work``. ``work``
    holds the plain quantization and the calibration cache it wrote, so nothing here calibrates
    again."""
    if not (plan.sensitivity or plan.mode == "auto"):
        return {}, work / PLAIN_FILE
    prepared = preprocess(float_path, work / "prepared.onnx")
    probes = calibration.feeds[:PROBE_IMAGES]
    layers = layer_sensitivity(
        prepared,
        work / RANGES_FILE,
        plan.options,
        probes,
        lambda path: session(path, plan.threads),
        exclude=quantized["kept_float"],
    )
    write_sensitivity(layers, float_path.parent / SENSITIVITY_FILE)
    sections: dict[str, Any] = {"sensitivity": sensitivity_summary(layers, len(probes))}
    if plan.mode != "auto":
        return sections, work / PLAIN_FILE
    ranked = [layer.node for layer in layers]
    sections["auto"], chosen = _auto_keep(prepared, ranked, subsets[1], datamodule, plan, work)
    return sections, chosen


def _auto_keep(
    prepared: Path, ranked: list[str], selection: Any, datamodule: Any, plan: Deployment, work: Path
) -> tuple[dict[str, Any], Path]:
    """Keep the first layers of ``ranked`` (most sensitive first) in float on top of keep_float
    until the mIoU drop from the float graph (``prepared``) on the ``selection`` images
    (held-out train images: selection never looks at val) is within ``plan.max_drop``
    (:func:`~segnas.quantize.sensitivity.smallest_kept`); returns the report's ``auto`` section
    (the tries, what was kept, the int8 latency with and without it) and the chosen file."""
    size = plan.input_size
    batches = list(datamodule.loader(selection, train=False))
    num_classes = len(datamodule.class_names)

    def score(path: Path) -> float:
        return miou(OnnxSegmenter(session(path, plan.threads), size), batches, num_classes, datamodule.ignore_index)

    reference = score(prepared)

    def candidate(count: int) -> Path:
        return work / (f"keep{count}.onnx" if count > 0 else PLAIN_FILE)

    def drop(count: int) -> float:
        if count > 0:
            options = keeping(plan.options, ranked[:count])
            quantize_static(prepared, candidate(count), None, options, calibration_cache=work / RANGES_FILE)
        return reference - score(candidate(count))

    found = smallest_kept(drop, len(ranked), plan.max_drop)
    timer = OnnxRuntimeLatency(threads=plan.threads)
    all_int8 = timer.measure_file(candidate(0), size)["latency_ms"]
    kept = timer.measure_file(candidate(found.kept), size)["latency_ms"] if found.kept else all_int8
    section: dict[str, Any] = {
        "max_drop": plan.max_drop,
        "select_images": len(selection),
        "selection_miou_float32": reference,
        "trail": [{"kept": count, "drop": value} for count, value in found.trail],
        "kept": ranked[: found.kept],
        "drop": dict(found.trail)[found.kept],
        "reached": found.reached,
        "latency_ms": {"all_int8": all_int8, "kept_float": kept},
        "latency_cost": kept / all_int8,
    }
    if not found.reached:
        section["note"] = (
            f"no set of kept layers brings the selection drop within {plan.max_drop:g}, not even all "
            f"{len(ranked)} compute layers in float (the ops left int8 lose it): kept the set with the smallest "
            "drop; quantization-aware fine-tuning is not implemented"
        )
    return section, candidate(found.kept)


def summary_fields(report: dict[str, Any]) -> dict[str, Any]:
    """The flat ``int8_*`` keys a run's ``summary.json`` carries from a quantize report."""
    return {
        "int8_miou": report["miou_int8"],
        "int8_float32_onnx_miou": report["miou_float32"],
        "int8_miou_drop": report["miou_drop"],
        "int8_changed_pixels": report["scores"]["changed_pixels"],
        "int8_latency_ms": report["latency_int8_ms"],
        "int8_float32_latency_ms": report["latency_float32_ms"],
        "int8_latency_ratio": report["latency_ratio"],
        "int8_file_ratio": report["file_ratio"],
        "int8_input_size": report["input_size"],
        "int8_kept_float": len(report["kept_float"]),
        "int8_model_onnx": report["files"]["int8"],
    }
