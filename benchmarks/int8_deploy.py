"""float32 against int8 (ONNX Runtime static QDQ, per-channel) for trained networks: accuracy,
latency and file size, side by side in one process.

    python benchmarks/int8_deploy.py                                  # DeepLabV3+-MobileNetV2 and
        # LR-ASPP-MobileNetV3-L trained on the synthetic data and the VOC-layout fixture, manual + auto
    python benchmarks/int8_deploy.py --epochs 2 --data synthetic --arch lraspp-mobilenetv3-large
    python benchmarks/int8_deploy.py --runs /tmp/compare/runs/*_seed0 # winners of finished runs, no training

For each network:

* **accuracy**: ``segnas.quantize.deploy.quantize_network`` at the data's deployment size
  (``--sizes``: the synthetic images' 64 px; the fixture's images, 150-230 x 170-260 px, resized to
  224 x 224 as a fixed-input device would), float32 and int8 ONNX Runtime sessions scored by the
  same whole-image evaluator on every val image; in ``manual`` mode (every layer int8) and in
  ``auto`` mode (the most sensitive layers kept in float until the drop on held-out train images
  is within ``--max-drop``);
* **latency and size** at ``--latency-size`` (512 x 512): both files exported and quantized at
  that size (the auto mode's float layers kept), then timed alternately, ``--rounds`` rounds of
  ``runs`` x ``repeats`` passes each, on ``--threads`` threads; medians of the rounds and their ratio.

Backbones: MobileNetV2 starts from the ImageNet weights ``make install`` caches
(``model.backbone_weights=auto``); no MobileNetV3 ImageNet file can be had offline, so LR-ASPP's
encoder starts from random weights (said in every row). Prints a markdown table with the command,
machine and date, and writes every number to ``--out``/results.json.
"""

from __future__ import annotations

import segnas  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import write_voc_fixture  # noqa: E402

import segnas.pipeline  # noqa: E402
import segnas.run  # noqa: E402  (registers the run-id resolver the config uses)
from segnas.hardware.latency import OnnxRuntimeLatency  # noqa: E402
from segnas.quantize.deploy import Deployment, quantize_network  # noqa: E402
from segnas.quantize.static import QuantizeOptions  # noqa: E402
from segnas.tasks.quantize import network_file  # noqa: E402
from segnas.training import load_network  # noqa: E402

ARCHS = ("deeplabv3plus-mobilenetv2", "lraspp-mobilenetv3-large")
IMAGENET = {"deeplabv3plus-mobilenetv2": "auto"}
DATA = {
    "synthetic": ["data=synthetic", "data.num_classes=5", "data.train_size=256", "data.val_size=64"],
    "voc": ["data=voc", "data.num_classes=9", "data.crop_size=160", "data.batch_size=8"],
}
SIZES = {"synthetic": (64, 64), "voc": (224, 224)}


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=segnas.run.CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def data_overrides(name: str, work: Path) -> list[str]:
    overrides = list(DATA[name])
    if name == "voc":
        root = write_voc_fixture(work / "voc9", train=160, val=40)
        overrides.append(f"data.root={root}")
    return overrides


def train(arch: str, data: list[str], epochs: int, run_dir: Path) -> Path:
    """task=train of ``arch`` (the pipeline, Lightning); its ``model.pt``."""
    if not (run_dir / "model.pt").is_file():
        cfg = compose_config(
            "task=train",
            f"arch={arch}",
            f"run_dir={run_dir}",
            f"trainer.max_epochs={epochs}",
            f"model.backbone_weights={IMAGENET.get(arch, 'null')}",
            "quantize.in_summary=false",
            "logger=csv",
            *data,
        )
        segnas.pipeline.run(cfg)
    return run_dir / "model.pt"


def timed_pair(float_path: Path, int8_path: Path, size: tuple[int, int], rounds: int, threads: int) -> dict[str, Any]:
    """Both files timed in alternation, ``rounds`` times: the medians and their ratio."""
    timer = OnnxRuntimeLatency(threads=threads, warmup=3, runs=10, repeats=3)
    times: dict[str, list[float]] = {"float32": [], "int8": []}
    for _ in range(rounds):
        for name, path in (("float32", float_path), ("int8", int8_path)):
            times[name].append(timer.measure_file(path, size)["latency_ms"])
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "rounds_ms": times,
        "float32_ms": medians["float32"],
        "int8_ms": medians["int8"],
        "ratio": medians["int8"] / medians["float32"],
    }


def measure(
    model: Path, data_cfg: Any, size: tuple[int, int], mode: str, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    _, _, net = load_network(network_file(str(model)))
    net.eval()
    datamodule = instantiate(data_cfg)
    options = QuantizeOptions(calibration=args.calibration)
    plan = Deployment(size, options, calib_images=args.calib_images, mode=mode, max_drop=args.max_drop, threads=2)
    accuracy = quantize_network(net, datamodule, plan, out / f"{mode}_accuracy")
    kept = tuple(accuracy["kept_float"])
    latency_plan = Deployment(
        tuple(args.latency_size),
        QuantizeOptions(calibration=args.calibration, keep_float=kept),
        calib_images=4,
        val_images=1,
    )
    at_size = quantize_network(net, datamodule, latency_plan, out / f"{mode}_latency")
    timing = timed_pair(
        Path(at_size["files"]["float32"]),
        Path(at_size["files"]["int8"]),
        tuple(args.latency_size),
        args.rounds,
        args.threads,
    )
    return {
        "mode": mode,
        "accuracy_size": list(size),
        "miou_float32": accuracy["miou_float32"],
        "miou_int8": accuracy["miou_int8"],
        "miou_drop": accuracy["miou_drop"],
        "changed_pixels": accuracy["scores"]["changed_pixels"],
        "val_images": accuracy["scores"]["images"],
        "kept_float": list(kept),
        "latency_size": list(args.latency_size),
        "latency": timing,
        "file_bytes": at_size["file_bytes"],
        "file_ratio": at_size["file_ratio"],
        "gap8_ms": at_size["gap8"]["latency_ms"],
        "accuracy_report": accuracy,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| network | data | weights | mode | float32 mIoU | int8 mIoU | drop | kept float | "
        "float32 ms | int8 ms | int8/float32 | file MB f32 → int8 (ratio) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['data']} | {r['weights']} | {r['mode']} | {r['miou_float32']:.4f} | "
            f"{r['miou_int8']:.4f} | {r['miou_drop']:+.4f} | {len(r['kept_float'])} | "
            f"{r['latency']['float32_ms']:.1f} | {r['latency']['int8_ms']:.1f} | {r['latency']['ratio']:.2f} | "
            f"{r['file_bytes']['float32'] / 1e6:.1f} → {r['file_bytes']['int8'] / 1e6:.1f} ({r['file_ratio']:.2f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(ARCHS))
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--runs", nargs="*", default=[], help="finished run dirs (their model.pt) instead of training")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--modes", nargs="+", default=["manual", "auto"], choices=["manual", "auto"])
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--calibration", default="minmax")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--latency-size", type=int, nargs=2, default=[512, 512])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/int8_deploy"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[str, str, str, Path, Any, tuple[int, int]]] = []
    for run in map(Path, args.runs):
        cfg = OmegaConf.load(run / "config.yaml").data  # resolved when the run wrote it
        jobs.append((run.name, "run's data", "as trained", run, cfg, _first_val_size(cfg)))
    if not args.runs:
        for data in args.data:
            overrides = data_overrides(data, args.out)
            for arch in args.arch:
                model = train(arch, overrides, args.epochs, args.out / f"{data}_{arch}")
                cfg = compose_config("task=train", f"arch={arch}", "run_dir=/unused", *overrides).data
                weights = "ImageNet" if arch in IMAGENET else "random (no offline ImageNet file)"
                jobs.append((arch, data, weights, model, cfg, SIZES[data]))
    for network, data, weights, model, cfg, size in jobs:
        for mode in args.modes:
            row = measure(model, cfg, size, mode, args, args.out / f"{data}_{network}".replace(" ", "_"))
            rows.append({"network": network, "data": data, "weights": weights, **row})
            print(table(rows[-1:]), flush=True)
    header = (
        f"    {shlex.join(['python', *sys.argv])}\n\n{platform.node()} ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, {datetime.date.today()}, {args.threads} threads\n"
    )
    print(header + "\n" + table(rows))
    (args.out / "results.json").write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=2, default=str))


def _first_val_size(data_cfg: Any) -> tuple[int, int]:
    datamodule = instantiate(data_cfg)
    datamodule.setup("validate")
    height, width = datamodule.eval_dataset("val")[0]["image"].shape[-2:]
    return int(height), int(width)


if __name__ == "__main__":
    main()
