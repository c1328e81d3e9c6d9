"""Time of the evaluation protocol for one network: whole-image against sliding-window inference
(segnas.evaluation.EvalProtocol.predict), median of N, no grad, eval mode.

    python benchmarks/eval_protocol.py --arch deeplabv3plus-mobilenetv2 --size 1024 2048 --window 769 --stride 513

The default is Cityscapes' case: a 1024×2048 image, 769 windows every 513 pixels (8 windows,
2.3 times the pixels of the whole image). Prints one JSON line per mode.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
import torch

from segnas import spaces
from segnas.evaluation import EvalProtocol, window_starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="deeplabv3plus-mobilenetv2")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048])
    parser.add_argument("--window", type=int, default=769)
    parser.add_argument("--stride", type=int, default=513)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = spaces.build(spaces.resolve_arch(args.arch), args.classes).to(device).eval()
    images = torch.randn(1, 3, *args.size, device=device)
    protocols = {"whole": EvalProtocol("whole"), "slide": EvalProtocol("slide", (args.window,) * 2, (args.stride,) * 2)}
    windows = len(window_starts(args.size[0], args.window, args.stride)) * len(
        window_starts(args.size[1], args.window, args.stride)
    )

    def once(protocol: EvalProtocol) -> float:
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            protocol.predict(net, images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    results = {}
    for name, protocol in protocols.items():
        once(protocol)  # warm-up
        times = [once(protocol) for _ in range(args.runs)]
        results[name] = statistics.median(times)
        print(
            json.dumps(
                {
                    "benchmark": "eval_protocol",
                    "mode": name,
                    "arch": args.arch,
                    "size": args.size,
                    "window": args.window if name == "slide" else None,
                    "stride": args.stride if name == "slide" else None,
                    "windows": windows if name == "slide" else 1,
                    "device": args.device,
                    "threads": args.threads,
                    "bf16": args.bf16,
                    "machine": platform.processor() or platform.machine(),
                    "median_s": round(results[name], 3),
                    "min_s": round(min(times), 3),
                    "runs": args.runs,
                }
            ),
            flush=True,
        )
    print(json.dumps({"benchmark": "eval_protocol", "slide_over_whole": round(results["slide"] / results["whole"], 2)}))


if __name__ == "__main__":
    main()
