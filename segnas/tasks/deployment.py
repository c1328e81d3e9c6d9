"""The int8 network a run delivers: ``task=quantize``'s plan and GAP8 model, and the ``int8_*``
keys every ``task=search`` / ``task=train`` summary gains from its ``model.pt``
(``quantize.in_summary``), so every winner, random baseline and hand-designed baseline is scored
as the device runs it and ``task=compare`` can pair those scores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from segnas.hardware.gap8 import Gap8Latency
from segnas.quantize.deploy import Deployment, quantize_network, summary_fields
from segnas.quantize.static import QuantizeOptions
from segnas.settings.run import QuantizeSettings
from segnas.targets import SEGMENTATION
from segnas.training import load_network

log = logging.getLogger(__name__)

#: Where a search's or a training's int8 files and ``quantize.json`` go, under its run directory.
INT8_DIR = "int8"


def deployment(settings: QuantizeSettings, datamodule: Any) -> Deployment:
    """The typed plan from ``quantize.*``; a null ``input_size`` is the first val image's size."""
    size = settings.input_size
    if size is None:
        datamodule.setup("validate")
        size = list(datamodule.eval_dataset("val")[0]["image"].shape[-2:])
    return Deployment(
        input_size=(int(size[0]), int(size[1])),
        options=QuantizeOptions(
            calibration=str(settings.calibration),
            per_channel=settings.per_channel,
            keep_float=tuple(settings.keep_float),
            reduce_range=settings.reduce_range,
        ),
        calib_images=settings.calib_images,
        val_images=settings.val_images,
        threads=settings.threads,
        opset=settings.opset,
        mode=str(settings.mode),
        max_drop=settings.max_drop,
        select_images=settings.select_images,
        sensitivity=settings.sensitivity,
    )


def gap8_target(cfg: DictConfig) -> Gap8Latency:
    """The run's GAP8 model when ``hardware=gap8`` (its constants), else the shipped one."""
    hardware = cfg.get("hardware")
    if hardware is not None and str(hardware.get("_target_", "")).endswith("Gap8Latency"):
        return instantiate(hardware)
    return Gap8Latency()


def int8_summary(
    model: str | None,
    datamodule: Any,
    settings: QuantizeSettings,
    gap8: Gap8Latency,
    out_dir: Path,
    task_type: str = SEGMENTATION,
) -> dict[str, Any]:
    """The ``int8_*`` summary keys of ``model`` (the run's ``model.pt``) quantized into ``out_dir``
    as ``task=quantize`` would; ``{}`` when ``quantize.in_summary`` is off.

    The network is read back from the file the run delivers, so it is a CPU copy whatever device
    trained it, and the numbers are of the very file a user would quantize. Without a model
    (``retrain.epochs=0`` retrains nothing) or for depth networks (the int8 scores are
    segmentation's) the summary says why there are none (``int8_skipped``). Quantizing comes after
    every float result is known, so its failure must not lose them: it is logged in one line and
    recorded as ``int8_error``."""
    if not settings.in_summary:
        return {}
    skipped = _skip_reason(model, task_type)
    if skipped is not None:
        log.info("int8: skipped (%s)", skipped)
        return {"int8_skipped": skipped}
    try:
        _, _, net = load_network(model)
        report = quantize_network(net.eval(), datamodule, deployment(settings, datamodule), out_dir, gap8)
    except Exception as err:  # whatever fails here, the float results are what the run is for
        error = f"{type(err).__name__}: {err}".splitlines()[0]
        log.error(
            "int8: quantizing %s failed, the float results stand (quantize.in_summary=false skips it): %s", model, error
        )
        return {"int8_error": error}
    fields = summary_fields(report)
    log.info(
        "int8: val mIoU %.4f (float32 ONNX %.4f) · %.2f ms (%.2fx float32) · %s",
        fields["int8_miou"],
        fields["int8_float32_onnx_miou"],
        fields["int8_latency_ms"],
        fields["int8_latency_ratio"],
        fields["int8_model_onnx"],
    )
    return fields


def _skip_reason(model: str | None, task_type: str) -> str | None:
    if task_type != SEGMENTATION:
        return f"task_type={task_type}: int8 scoring is for segmentation networks"
    if model is None or not Path(model).is_file():
        return "no model.pt to quantize (retrain.epochs=0 retrains nothing)"
    return None
