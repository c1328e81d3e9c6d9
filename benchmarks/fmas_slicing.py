"""FMAS slicing: seconds to cut a sub-network out of the supernet, as a standalone copy (what
fine-tuning gets: ``copy.deepcopy`` of the supernet, then slicing) and sharing the supernet's
weights (what scoring gets: ``extract(share_weights=True)``), alternately in one run.

    python benchmarks/fmas_slicing.py --repeats 5

For each backbone (MobileNetV2: 5.8 M parameters; aligned Xception-65: ~40 M) the full network and
``--samples`` sub-networks drawn uniformly from the default FMAS space. Prints one JSON line per
backbone with the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
import numpy as np
import torch

from segnas import spaces
from segnas.nn.elastic import extract
from segnas.searchers.fmas.encoding import Encoding, subnet_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for preset in ("elastic-deeplabv3plus-mobilenetv2", "elastic-deeplabv3plus-xception"):
        full = spaces.resolve_arch(preset)
        net = spaces.build(full, 21).eval()
        encoding = Encoding(spaces.get_space(full.space), full, [0.25, 0.5, 0.75, 1.0], [0.25, 0.5, 0.75, 1.0])
        configs = {"full": subnet_config(full)}
        for k in range(args.samples):
            configs[f"sample{k}"] = subnet_config(
                encoding.decode(rng.integers(encoding.xl, encoding.xu, endpoint=True))
            )
        times: dict[str, list[float]] = {"copy": [], "shared": []}
        for _ in range(args.repeats):
            for mode, share in (("copy", False), ("shared", True)):
                start = time.perf_counter()
                for config in configs.values():
                    extract(net, config, share_weights=share)
                times[mode].append((time.perf_counter() - start) / len(configs))
        copy_s, shared_s = statistics.median(times["copy"]), statistics.median(times["shared"])
        print(
            json.dumps(
                {
                    "benchmark": "fmas_slicing",
                    "supernet": preset,
                    "params": sum(p.numel() for p in net.parameters()),
                    "networks": len(configs),
                    "copy_median_s": round(copy_s, 4),
                    "shared_median_s": round(shared_s, 4),
                    "ratio": round(copy_s / shared_s, 2),
                    "threads": args.threads,
                    "machine": platform.processor() or platform.machine(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
