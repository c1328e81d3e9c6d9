"""Time of turning logits into class ids: ``torch.argmax(1)`` against segnas's
``predicted_classes`` (``max(1).indices``, the same values), side by side in one run, median of N.

    python benchmarks/class_predictions.py
    python benchmarks/class_predictions.py --shape 1 19 1024 2048 --device cuda

Why: every confusion-matrix update (validation in training, every search's scoring, FMAS's
candidates) reduces its logits over the class dimension, which is not the innermost one; torch's
CPU ``argmax`` takes a slow path there (pytorch/pytorch#140000). The default shapes are FMAS's
scoring batch (32 images of 64×64, 5 classes), a training validation batch (8, 19 classes) and
a Cityscapes image (1024×2048, 19 classes). Prints one JSON line per shape and memory layout,
with the logits' read rate (the op does no FLOPs; bytes of logits / median time).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import segnas  # noqa: F401  (first: sets the OpenMP wait before torch loads)

# isort: split
import torch

from segnas.metrics import predicted_classes

SHAPES = ((32, 5, 64, 64), (8, 19, 64, 64), (1, 19, 1024, 2048))


def seconds(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, action="append", help="N C H W (repeatable)")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    for shape in args.shape or SHAPES:
        for layout in ("contiguous", "channels_last"):
            logits = torch.randn(*shape, device=device)
            if layout == "channels_last":
                logits = logits.contiguous(memory_format=torch.channels_last)
            if not torch.equal(logits.argmax(1), predicted_classes(logits)):
                raise SystemExit(f"{shape} {layout}: predicted_classes differs from argmax")
            for _ in range(3):  # warm-up
                seconds(lambda: logits.argmax(1), device)
                seconds(lambda: predicted_classes(logits), device)
            # alternate the two, so both see the same machine load
            argmax, ours = [], []
            for _ in range(args.runs):
                argmax.append(seconds(lambda: logits.argmax(1), device))
                ours.append(seconds(lambda: predicted_classes(logits), device))
            gigabytes = logits.numel() * logits.element_size() / 1e9
            a, o = statistics.median(argmax), statistics.median(ours)
            print(
                json.dumps(
                    {
                        "benchmark": "class_predictions",
                        "shape": list(shape),
                        "layout": layout,
                        "device": args.device,
                        "threads": torch.get_num_threads(),
                        "machine": platform.processor() or platform.machine(),
                        "argmax_ms": round(a * 1e3, 3),
                        "predicted_classes_ms": round(o * 1e3, 3),
                        "ratio": round(o / a, 3),
                        "argmax_gbps": round(gigabytes / a, 2),
                        "predicted_classes_gbps": round(gigabytes / o, 2),
                        "runs": args.runs,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
