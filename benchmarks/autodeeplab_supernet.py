"""Auto-DeepLab supernet: median time of a search step and its peak memory.

    python benchmarks/autodeeplab_supernet.py --layers 12 --filter-multiplier 8 --blocks 5 \
        --batch 2 --size 64 --classes 4 --steps 5            # weight step, 64x64
    python benchmarks/autodeeplab_supernet.py --size 321 --classes 19 --steps 2 --recompute

A weight step is forward + backward + SGD (momentum 0.9, weight decay 3e-4) on the weights;
``--arch-step`` adds the first-order architecture step (forward + gradient of α and β only +
Adam), as the search does after warm-up. Each process measures one configuration, so the peak
resident memory (CPU) or the CUDA peak (GPU) belongs to it alone. Prints one JSON line.

On CPU the peak RSS includes the memory glibc keeps after tensors are freed (it reuses it rather
than returning it, which is faster). With ``MALLOC_MMAP_THRESHOLD_=131072`` in the environment
every large tensor is returned on free, so the peak RSS is the peak of live memory, the CPU
counterpart of ``torch.cuda.max_memory_allocated``; steps are then about 2.5x slower.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
from machine import gemm_rate, utilisation  # benchmarks/machine.py, next to this script

from segnas.hardware.costs import count_training_flops
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet, BlockEdges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--filter-multiplier", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--arch-step", action="store_true", help="add the architecture step")
    parser.add_argument("--aspp-channels", type=int, default=256)
    parser.add_argument("--checkpoint-cells", action="store_true")
    parser.add_argument(
        "--recompute",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep each block's input and atrous outputs only, recompute the rest",
    )
    parser.add_argument(
        "--compare-recompute",
        action="store_true",
        help="time steps with and without recomputation alternately in this one process "
        "(its peak memory is then the plain graph's)",
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--partial-channels", type=int, default=1, help="K > 1: PC-DARTS approximation")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    net = (
        AutoDeepLabSupernet(
            args.classes,
            args.layers,
            args.filter_multiplier,
            args.blocks,
            aspp_channels=args.aspp_channels,
            checkpoint_cells=args.checkpoint_cells,
            partial_channels=args.partial_channels,
            recompute=args.recompute,
        )
        .to(device)
        .train()
    )
    blocks = [m for m in net.modules() if isinstance(m, BlockEdges)]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    weights = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch = torch.optim.Adam(net.arch_parameters(), lr=3e-3, weight_decay=1e-3)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=memory_format)
    masks = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)

    def loss() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            return F.cross_entropy(net(images), masks)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> float:
        start = time.perf_counter()
        weights.zero_grad(set_to_none=True)
        loss().backward()
        weights.step()
        if args.arch_step:
            grads = torch.autograd.grad(loss(), net.arch_parameters())
            for parameter, grad in zip(net.arch_parameters(), grads):
                parameter.grad = grad
            arch.step()
            arch.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    rate = gemm_rate(device, dtype=torch.bfloat16 if args.bf16 else torch.float32)  # this run's cores
    if args.compare_recompute:
        paired = {True: [], False: []}
        for index in range(args.steps):  # alternately, each first in turn: the machine's drift hits both
            for flag in (True, False) if index % 2 == 0 else (False, True):
                for block in blocks:
                    block.recompute = flag
                paired[flag].append(step())
        for block in blocks:
            block.recompute = args.recompute
    times = [step() for _ in range(args.steps)] if not args.compare_recompute else paired[args.recompute]
    memory = (
        {"cuda_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
        if device.type == "cuda"
        else {
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_model_mib": round(rss_before, 1),
        }
    )
    # the FLOPs one step must do (counted, convolution backward with its groups): the plain graph's,
    # the floor, counted after the memory was read (the plain graph keeps more); then what the step
    # does with this run's recomputation
    flops_done = count_training_flops(step)
    recompute = [block.recompute for block in blocks]
    for block in blocks:
        block.recompute = False
    flops = count_training_flops(step)
    result = {
        "benchmark": "autodeeplab_supernet",
        "layers": args.layers,
        "filter_multiplier": args.filter_multiplier,
        "blocks": args.blocks,
        "batch": args.batch,
        "size": args.size,
        "classes": args.classes,
        "arch_step": args.arch_step,
        "checkpoint_cells": args.checkpoint_cells,
        "recompute": any(recompute),
        "channels_last": args.channels_last,
        "partial_channels": args.partial_channels,
        "bf16": args.bf16,
        "aspp_channels": args.aspp_channels,
        "weight_params": sum(p.numel() for p in net.weight_parameters()),
        "median_step_s": round(statistics.median(times), 3),
        "steps_s": [round(t, 3) for t in times],
        **utilisation(flops, statistics.median(times), rate),
        "gflop_done": round(flops_done / 1e9, 3),  # with the recomputed forwards
        "device": str(device),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    result.update(memory)
    if args.compare_recompute:
        medians = {flag: statistics.median(paired[flag]) for flag in paired}
        result.update(
            {
                "recompute_steps_s": [round(t, 3) for t in paired[True]],
                "plain_steps_s": [round(t, 3) for t in paired[False]],
                "recompute_over_plain": round(medians[True] / medians[False], 3),
            }
        )
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
