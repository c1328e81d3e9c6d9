"""Search throughput of whole searches: auxcell children per hour and FMAS candidates per minute,
for one or more checkouts of segnas run alternately (so two versions are compared side by side in
one run on a shared machine), median of ``--repeats`` each.

    python benchmarks/search_throughput.py --searcher auxcell --repeats 3 --checkout . --checkout /tmp/old
    python benchmarks/search_throughput.py --searcher fmas --repeats 3 --checkout . --checkout /tmp/old
    python benchmarks/search_throughput.py --searcher fmas --supernet-arch deeplabv3plus-xception \\
        --checkout . --checkout /tmp/old

Each run is a fresh process that imports segnas from its checkout and times its search
(``search(settings, context)``; a checkout from before the searcher contract: ``search(cfg,
run_dir, None, None)``) on the synthetic defaults (auxcell: 6 children;
FMAS: the default population and generations over a given untrained supernet of
``--supernet-arch``, so no supernet training is timed), on ``--device`` (``searcher.device``; by
default the GPU when there is one, since the default ``trainer=cpu`` would keep FMAS on the CPU).
``--set key=value`` adds overrides (they, and ``searcher.device``, must exist in every checkout's
config). Prints one JSON line per run and a summary line with the
medians and their ratios to the first checkout; for FMAS also the candidates' counted forward
FLOPs per second (BatchNorm recalibration and scoring: MACs × images × 2), the machine's GEMM
rate in the same run and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: The environment as the user started this script, before ``import segnas`` (through
#: ``fixtures``) adds its OpenMP wait: each checkout's run must set its own.
USER_ENV = dict(os.environ)

import torch  # noqa: E402
from fixtures import write_untrained_supernet  # noqa: E402  (imports segnas, which sets the wait for torch)
from machine import gemm_rate  # noqa: E402

CHILD = r"""
import json, sys, time
from pathlib import Path
checkout, searcher, supernet, run_dir, *overrides = sys.argv[1:]
sys.path.insert(0, checkout)
import segnas
import torch
from hydra import compose, initialize_config_dir
import segnas.run
from hydra.utils import get_method
base = ["data=synthetic", "logger=csv", "trainer.enable_progress_bar=false", f"searcher={searcher}",
        f"run_dir={run_dir}", "model.backbone_weights=null"]
if searcher == "fmas":
    base.append(f"searcher.supernet={supernet}")
with initialize_config_dir(config_dir=str(Path(checkout).resolve() / "conf"), version_base="1.3"):
    cfg = compose("config", overrides=[*base, *overrides])
torch.manual_seed(int(cfg.seed))
spent = []  # FMAS: forward MACs of every candidate's recalibration and scoring (the unit's work)
if searcher == "fmas":
    from segnas.searchers.fmas import evaluator
    plain = evaluator.Evaluator._score
    def counted(self, record, net):
        out = plain(self, record, net)
        if out["feasible"]:
            spent.append(int(out["macs"]) * int(self.scorer.images_per_score))
        return out
    evaluator.Evaluator._score = counted
Path(run_dir).mkdir(parents=True, exist_ok=True)
try:  # the searcher contract (segnas/searchers/contract.py): settings and context, the data built first
    from segnas.searchers.registry import registration
except ImportError:  # a checkout from before it: search(cfg, run_dir, resume, logger)
    search = get_method(str(cfg.searcher._target_))
    start = time.perf_counter()
    result = search(cfg, Path(run_dir), None, None)
else:
    from hydra.utils import instantiate
    from segnas.settings import schema
    from segnas.tasks.search import context
    settings = schema.load(cfg)
    handed = context(cfg, settings, Path(run_dir), None, None, instantiate(cfg.data))
    start = time.perf_counter()
    result = registration(settings.searcher.name).search()(settings.searcher, handed)
seconds = time.perf_counter() - start
units = result.summary.get("search_children") if searcher == "auxcell" else result.summary.get("candidates_scored")
print("RESULT " + json.dumps({"seconds": seconds, "units": units, "flops": 2 * sum(spent) if spent else None,
                              "segnas": segnas.__file__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searcher", choices=("auxcell", "fmas"), default="auxcell")
    parser.add_argument("--checkout", action="append", default=None, help="a segnas checkout (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="a Hydra override for every run")
    parser.add_argument("--supernet-arch", default="deeplabv3plus-mobilenetv2", help="FMAS: the supernet's preset")
    parser.add_argument(
        "--device",
        default=None,
        help="where the search runs (searcher.device) and the GEMM rate is measured; "
        "default: cuda when there is one, else cpu",
    )
    args = parser.parse_args()
    checkouts = [str(Path(c).resolve()) for c in (args.checkout or ["."])]
    work = Path(tempfile.mkdtemp(prefix="segnas-throughput-"))
    supernet = (
        write_untrained_supernet(work / "supernet.pt", 5, 64, args.supernet_arch)
        if args.searcher == "fmas"
        else Path("none")
    )
    times: dict[str, list[float]] = {c: [] for c in checkouts}
    rates: dict[str, list[float]] = {c: [] for c in checkouts}
    env = {**USER_ENV, "WANDB_MODE": "offline", "PYTHONPATH": ""}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = [f"searcher.device={device}", *args.set]
    # on the searches' device (a GPU search against the CPU's rate would read as 100x utilisation),
    # with torch's default threads, as the searches run
    rate_gflops = gemm_rate(device)
    flops: dict[str, list[float]] = {c: [] for c in checkouts}
    for repeat in range(args.repeats):
        for index, checkout in enumerate(checkouts):  # alternate: both see the same machine load
            run_dir = work / f"{index}_{repeat}"
            done = subprocess.run(
                [sys.executable, "-c", CHILD, checkout, args.searcher, str(supernet), str(run_dir), *overrides],
                capture_output=True,
                text=True,
                env=env,
                cwd=checkout,
                check=False,
            )
            line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{checkout} failed:\n{done.stderr[-3000:]}")
            result = json.loads(line[len("RESULT ") :])
            per = 3600.0 if args.searcher == "auxcell" else 60.0
            rate = result["units"] / result["seconds"] * per
            times[checkout].append(result["seconds"])
            rates[checkout].append(rate)
            if result.get("flops"):
                flops[checkout].append(result["flops"] / result["seconds"] / 1e9)
            print(
                json.dumps(
                    {
                        "checkout": checkout,
                        "repeat": repeat,
                        **result,
                        ("children_per_hour" if args.searcher == "auxcell" else "candidates_per_minute"): rate,
                    }
                ),
                flush=True,
            )
    first = checkouts[0]
    print(
        json.dumps(
            {
                "benchmark": "search_throughput",
                "searcher": args.searcher,
                "device": device,
                **({"supernet_arch": args.supernet_arch} if args.searcher == "fmas" else {}),
                "machine": platform.processor() or platform.machine(),
                "median_seconds": {c: round(statistics.median(t), 2) for c, t in times.items()},
                "median_rate": {c: round(statistics.median(r), 2) for c, r in rates.items()},
                "rate_ratio_to_first": {
                    c: round(statistics.median(rates[c]) / statistics.median(rates[first]), 3) for c in checkouts
                },
                # FMAS: the candidates' counted forward FLOPs (recalibration + scoring) per second against the
                # machine's GEMM rate in this run; auxcell children: see auxcell_children.py
                "achieved_gflops": {c: round(statistics.median(f), 2) for c, f in flops.items() if f} or None,
                "gemm_gflops": round(rate_gflops, 2),
                "utilisation": {c: round(statistics.median(f) / rate_gflops, 3) for c, f in flops.items() if f} or None,
            }
        )
    )


if __name__ == "__main__":
    main()
