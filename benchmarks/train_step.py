"""Training-step time of a built network: forward + backward + optimiser step, median of N.

    python benchmarks/train_step.py --arch deeplabv3plus-mobilenetv2 --batch 8 --size 256 --steps 10

Prints one JSON line. On CPU the thread count is fixed (--threads) so runs are comparable.
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
from machine import measured, utilisation  # benchmarks/machine.py, next to this script

from segnas import spaces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="deeplabv3plus-mobilenetv2")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = spaces.build(spaces.resolve_arch(args.arch), args.classes).to(device).train()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=memory_format)
    masks = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = criterion(net(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step()
    flops, rate = measured(step, device, torch.bfloat16 if args.bf16 else torch.float32)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(args.steps)]
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "arch": args.arch,
                "batch": args.batch,
                "size": args.size,
                "classes": args.classes,
                "device": args.device,
                "threads": args.threads,
                "machine": platform.processor() or platform.machine(),
                "median_step_s": round(statistics.median(times), 4),
                "min_step_s": round(min(times), 4),
                "steps": args.steps,
                "images_per_s": round(args.batch / statistics.median(times), 2),
                "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None,
                **utilisation(flops, statistics.median(times), rate),
            }
        )
    )


if __name__ == "__main__":
    main()
