"""Does int8 rank FMAS's sub-networks as float32 does (issue 28)? Kendall τ between their float32
and int8 scores and latencies, and the two Pareto fronts, over the sub-networks of one search.

    python benchmarks/int8_ranking.py --out /tmp/int8_ranking

One FMAS search (``task=search``'s searcher alone: synthetic data, a supernet trained here from
ImageNet MobileNetV2 for ``--supernet-epochs``, NSGA-II on ``searcher.objectives=[miou,miou_int8,
macs]``) scores every sub-network in float32 and in int8 (:mod:`segnas.searchers.fmas.int8`).
Then, for each scored sub-network, in one loop: the search's own two scorers run again, timed
(the cost of the int8 objective per candidate, and a check that both scores reproduce), and
ONNX Runtime times its float32 file (``hardware=onnx_cpu``) and its int8 file
(``hardware=onnx_cpu_int8``) one after the other, in alternating order, so that the load of a
shared machine falls on both alike, then its float32 file once more: two timings of one file say
how much of a latency ranking is the machine's noise.

Prints one JSON line per sub-network and a summary line: Kendall τ (scipy's tau-b with a
bootstrap interval, :func:`segnas.report.statistics.kendall`) of float32 against int8 mIoU, of
float32 against int8 latency, and of the two float32 timings (the noise floor); the float32 front
(mIoU against float32 latency) and the int8 front (int8 mIoU against int8 latency) over the same
sub-networks, their members and what each misses, and the same against MACs (no timing noise:
what the int8 score alone changes); the median cost of a float32 and of an int8 score.
"""

from __future__ import annotations

import segnas  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import segnas.run
from segnas.genotype import Genotype
from segnas.hardware.latency import OnnxRuntimeLatency
from segnas.nn.elastic import sort_channels
from segnas.quantize.latency import OnnxRuntimeInt8Latency
from segnas.report.statistics import kendall
from segnas.searchers.engine import STATE_KEY
from segnas.searchers.fmas.module import FMASSearchModule
from segnas.searchers.fmas.pareto import non_dominated
from segnas.searchers.fmas.settings import ChannelOrder
from segnas.searchers.fmas.supernet import obtain
from segnas.searchers.registry import registration
from segnas.settings import schema
from segnas.spaces import get_space
from segnas.tasks.search import context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet-epochs", type=int, default=3)
    parser.add_argument("--pop-size", type=int, default=8)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--images", type=int, default=16, help="searcher.val_images and searcher.calib_images")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads when timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="a Hydra override (data, searcher...)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="segnas-int8-ranking-"))
    started = time.perf_counter()
    overrides = [
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "data=synthetic",
        "data.train_size=256",
        "data.val_size=64",
        "searcher=fmas",
        "searcher.objectives=[miou,miou_int8,macs]",
        f"searcher.supernet_epochs={args.supernet_epochs}",
        f"searcher.pop_size={args.pop_size}",
        f"searcher.generations={args.generations}",
        f"searcher.val_images={args.images}",
        f"searcher.calib_images={args.images}",
        f"seed={args.seed}",
        f"run_dir={out}",
        *args.set,
    ]
    with initialize_config_dir(config_dir=segnas.run.CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    settings = schema.load(cfg)
    pl.seed_everything(args.seed, workers=True, verbose=False)  # as the pipeline seeds a run: the same supernet
    out.mkdir(parents=True, exist_ok=True)
    search_context = context(cfg, settings, out, None, None, instantiate(cfg.data))
    result = registration("fmas").search()(settings.searcher, search_context)
    search_s = time.perf_counter() - started
    rows = measure(settings.searcher, search_context, out, args.threads)
    summary = {
        "benchmark": "int8_ranking",
        "date": datetime.date.today().isoformat(),
        "machine": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "overrides": overrides,
        "search_s": round(search_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "supernet_miou": result.summary["supernet_miou"],
        "supernet_miou_int8": result.summary["supernet_miou_int8"],
        **compare(rows),
    }
    (out / "int8_ranking.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


def measure(settings: Any, search_context: Any, run_dir: Path, threads: int) -> list[dict[str, Any]]:
    """One row per scored sub-network of the search in ``run_dir``: its two scores as the search
    recorded them, both again with the time each took, and its float32 and int8 ONNX Runtime latency."""
    cache = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)[STATE_KEY]["search"]["cache"]
    records = [r for r in cache.values() if r.get("feasible")]
    space = get_space("elastic-deeplabv3plus")
    full, supernet, facts = obtain(settings, search_context, space)  # the supernet the search trained
    if settings.channel_order == ChannelOrder.l1:
        sort_channels(supernet)
    size = settings.priced_size(search_context.crop_size)
    module = FMASSearchModule(
        settings,
        space,
        full,
        supernet,
        search_context.datamodule,
        facts,
        protocol=search_context.protocol,
        input_size=size,
        target=None,
    )
    module.prepare_scoring(torch.device("cpu"))  # the search's scorers, as it built them
    timers = {"float32": OnnxRuntimeLatency(threads=threads), "int8": OnnxRuntimeInt8Latency(threads=threads)}
    rows = []
    for k, record in enumerate(records):
        net = module.evaluator.subnet(Genotype(space.name, record["genotype"]), share_weights=True)
        start = time.perf_counter()
        miou = module.scorer.score(net)["miou"]
        float_s = time.perf_counter() - start
        miou_int8 = module.int8.score(net)["miou_int8"]
        int8_s = time.perf_counter() - start - float_s
        order = ("float32", "int8") if k % 2 == 0 else ("int8", "float32")
        latency = {name: timers[name].measure(net, size) for name in order}
        again = timers["float32"].measure(net, size)
        row = {
            "genotype_hash": record["genotype_hash"],
            "macs": record["macs"],
            "miou": record["miou"],
            "miou_int8": record["miou_int8"],
            "scores_reproduce": miou == record["miou"] and miou_int8 == record["miou_int8"],
            "float32_score_s": round(float_s, 3),
            "int8_score_s": round(int8_s, 3),
            **{f"latency_{name}_ms": latency[name]["latency_ms"] for name in timers},
            **{f"latency_{name}_spread_ms": latency[name]["latency_spread_ms"] for name in timers},
            "latency_float32_again_ms": again["latency_ms"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """τ of the two scores and of the two latencies, the fronts, and the scoring costs."""

    def column(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows], dtype=float)

    ratio = column("latency_int8_ms") / column("latency_float32_ms")
    return {
        "sub_networks": len(rows),
        "scores_reproduce": all(r["scores_reproduce"] for r in rows),
        "miou_range": [float(column("miou").min()), float(column("miou").max())],
        "miou_int8_range": [float(column("miou_int8").min()), float(column("miou_int8").max())],
        "miou_drop_median": float(np.median(column("miou") - column("miou_int8"))),
        "tau_miou": kendall(column("miou"), column("miou_int8")),
        "tau_latency": kendall(column("latency_float32_ms"), column("latency_int8_ms")),
        "tau_latency_float32_repeat": kendall(column("latency_float32_ms"), column("latency_float32_again_ms")),
        "latency_ratio_range": [float(ratio.min()), float(ratio.max())],
        "latency_relative_spread_median": float(
            np.median(
                np.concatenate(
                    [column(f"latency_{n}_spread_ms") / column(f"latency_{n}_ms") for n in ("float32", "int8")]
                )
            )
        ),
        "fronts_latency": fronts(
            front(rows, "miou", "latency_float32_ms"), front(rows, "miou_int8", "latency_int8_ms")
        ),
        "fronts_macs": fronts(front(rows, "miou", "macs"), front(rows, "miou_int8", "macs")),
        "float32_score_s_median": statistics.median(r["float32_score_s"] for r in rows),
        "int8_score_s_median": statistics.median(r["int8_score_s"] for r in rows),
    }


def front(rows: list[dict[str, Any]], accuracy: str, cost: str) -> list[str]:
    """Hashes of the rows no other row beats on both (1 - ``accuracy``) and ``cost``."""
    F = np.array([[1.0 - r[accuracy], r[cost]] for r in rows], dtype=float)
    return sorted(rows[i]["genotype_hash"] for i in non_dominated(F))


def fronts(float32: list[str], int8: list[str]) -> dict[str, list[str]]:
    """Two fronts' members, those they share and those only one of them has."""
    return {
        "float32": float32,
        "int8": int8,
        "shared": sorted(set(float32) & set(int8)),
        "float32_only": sorted(set(float32) - set(int8)),
        "int8_only": sorted(set(int8) - set(float32)),
    }


if __name__ == "__main__":
    main()
