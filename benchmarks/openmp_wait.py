"""How torch's OpenMP wait (libgomp's spin before a waiting thread sleeps) sets the speed of a
real training run: ``task=train`` on the synthetic data under each wait setting, alone on the
machine and as two runs at once (oversubscribed cores), seconds per epoch from each run's log.

    python benchmarks/openmp_wait.py --arch deeplabv3plus-mobilenetv2
    python benchmarks/openmp_wait.py --arch runs/<search>/genotype.yaml --waits PASSIVE 1000 3000

A wait is ``PASSIVE`` / ``ACTIVE`` (``OMP_WAIT_POLICY``) or a spin count (``GOMP_SPINCOUNT``);
``default`` leaves both unset, i.e. what ``import segnas`` sets. Each setting is one process (libgomp
reads it when torch loads), run ``--rounds`` times, the settings alternating so that a machine
whose load drifts affects them alike. Prints one JSON line per setting and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from segnas import OPENMP_WAIT_KEYS

EPOCH = re.compile(r"epoch \d+/\d+: .*, ([0-9.]+) s$")


def environment(wait: str, threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_KEYS}
    if wait in ("PASSIVE", "ACTIVE"):
        env["OMP_WAIT_POLICY"] = wait
    elif wait != "default":
        env["GOMP_SPINCOUNT"] = wait
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def start(args: argparse.Namespace, wait: str, run_dir: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "segnas.run",
        "task=train",
        f"arch={args.arch}",
        f"trainer.max_epochs={args.epochs}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"data.num_classes={args.classes}",
        f"hydra.run.dir={run_dir}",
        *args.overrides,
    ]
    return subprocess.Popen(
        command, env=environment(wait, args.threads), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def epoch_seconds(process: subprocess.Popen, run_dir: Path) -> list[float]:
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"task=train failed in {run_dir}:\n{err[-2000:]}")
    lines = (run_dir / "run.log").read_text().splitlines()
    return [float(m.group(1)) for line in lines if (m := EPOCH.search(line))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="deeplabv3plus-mobilenetv2", help="a preset or a genotype file")
    parser.add_argument("--waits", nargs="+", default=["PASSIVE", "1000", "default"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each run (default: torch's)")
    parser.add_argument("--no-pair", action="store_true", help="only runs alone")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides of each run")
    args = parser.parse_args()

    modes = ["alone"] + ([] if args.no_pair else ["pair"])
    seconds: dict[tuple[str, str], list[float]] = {(w, m): [] for w in args.waits for m in modes}
    with tempfile.TemporaryDirectory(prefix="segnas-openmp-") as tmp:
        for round_ in range(args.rounds):
            for wait in args.waits:
                for mode in modes:
                    dirs = [Path(tmp) / f"{round_}-{wait}-{mode}-{i}" for i in range(1 if mode == "alone" else 2)]
                    processes = [start(args, wait, d) for d in dirs]
                    for process, run_dir in zip(processes, dirs):
                        seconds[(wait, mode)] += epoch_seconds(process, run_dir)
    for (wait, mode), values in seconds.items():
        print(
            json.dumps(
                {
                    "benchmark": "openmp_wait",
                    "arch": args.arch,
                    "wait": wait,
                    "mode": mode,
                    "threads": args.threads,
                    "epochs": values,
                    "median_epoch_s": round(statistics.median(values), 2),
                }
            )
        )


if __name__ == "__main__":
    main()
