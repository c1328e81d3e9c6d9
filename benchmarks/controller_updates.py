"""auxcell controller updates: one PPO update with a full buffer (the authors' settings: 100
buffered children, minibatch 1, so 100 Adam steps), for one seed alone (the search's own
``PPO.update``) and for a stack of ``--stack`` seeds updated as one (``Lockstep``, what a replay
runs), alternately in one run; seconds per seed-update, medians of ``--repeats``.

    python benchmarks/controller_updates.py --repeats 3 --stack 50

Prints one JSON line with the medians, their ratio and, for the stacked update, the counted FLOPs
of one seed-step, the machine's GEMM rate and the utilisation (``machine.py``). The controller's
steps are matrix-vector products (a minibatch of one sequence), so the GEMM rate is far out of
their reach: the line says how far.
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
from machine import gemm_rate, utilisation

from segnas.hardware.costs import count_training_flops
from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.lockstep import Lockstep
from segnas.searchers.auxcell.policy import build_policy
from segnas.searchers.auxcell.settings import ControllerSettings, Policy

#: The shipped controller settings (conf/searcher/auxcell.yaml): the authors' PPO, 100 slots.
SETTINGS = ControllerSettings()


def filled(seeds: range) -> tuple[list, list[tuple[list[int], float]]]:
    """Policies whose buffers hold 99 children each, and each seed's 100th child."""
    choices = decisions.choices()
    policies = [build_policy(Policy.ppo, Controller(choices, 100, 2, seed=s), SETTINGS, seed=s) for s in seeds]
    generator = torch.Generator().manual_seed(0)
    for policy in policies:
        for k in range(99):
            actions, log_prob, _ = policy.sample(generator)
            policy.buffer.append((actions, log_prob, 0.01 * k))
        policy.baseline = 0.5
    return policies, [policy.sample(generator)[:2] for policy in policies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stack", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the search and the replay run the controller
    times: dict[str, list[float]] = {"alone": [], "stacked": []}
    for _ in range(args.repeats):
        (policy,), ((actions, log_prob),) = filled(range(1))
        start = time.perf_counter()
        policy.update(actions, log_prob, 0.7)
        times["alone"].append(time.perf_counter() - start)
        policies, drawn = filled(range(args.stack))
        stack = Lockstep(policies)
        start = time.perf_counter()
        stack.update([a for a, _ in drawn], [lp for _, lp in drawn], [0.7] * len(drawn))
        times["stacked"].append((time.perf_counter() - start) / args.stack)
    # one seed-step's FLOPs: the controller's forward and backward on one buffered child
    (policy,), _ = filled(range(1))
    batch = policy.minibatches(*policy.buffer[0][:2], 0.7)[0]
    flops = count_training_flops(lambda: policy.loss(*policy.controller(batch["actions"]), batch).backward())
    alone, stacked = statistics.median(times["alone"]), statistics.median(times["stacked"])
    steps = len(policy.buffer)
    print(
        json.dumps(
            {
                "benchmark": "controller_updates",
                "buffer": steps,
                "stack": args.stack,
                "alone_s_per_seed_update": round(alone, 3),
                "stacked_s_per_seed_update": round(stacked, 3),
                "ratio": round(alone / stacked, 2),
                **utilisation(flops, stacked / steps, gemm_rate(size=1024)),
                "threads": 1,
                "machine": platform.processor() or platform.machine(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
