"""How far to trust a search's ranking (issue 16, section 5): the Kendall τ between what the
search ranks architectures by and their score after the pipeline trains them.

    python benchmarks/proxy_fidelity.py --supernet <run dir of searcher=fmas>/supernet/model.pt --samples 24
    python benchmarks/proxy_fidelity.py --searcher auxcell --samples 20 --epochs 3
    python benchmarks/proxy_fidelity.py --searcher autodeeplab --samples 20 --epochs 3

Auto-DeepLab: the search (``task=search searcher=autodeeplab retrain.epochs=0``) leaves α and β
(``arch_params.json``); its ranking of a discrete architecture is its α/β strength, log P(path | β)
plus the cell's log α weights (``architecture_log_strength``, which the decoded architecture
maximises). The decoded architecture and ``--samples`` - 1 drawn uniformly from the space
(``AutoDeepLabSpace.sample``, the random baseline's draw) are each trained from scratch as
``task=train`` runs for ``--epochs``; τ between the strength and the val mIoU.

auxcell: the pipeline itself (``segnas.pipeline.run``) with a uniform controller
(``controller.algorithm=uniform``), ``--samples`` children and ``top_k`` = all of them, so every
child that finished is retrained from scratch for ``--epochs`` (``retrain.*``); τ between the
reward the search ranks by (held-out train, as the search computes it) and the retrained val mIoU.

FMAS: the search ranks sub-networks by mIoU on the validation subset with inherited weights, no
fine-tuning; it is compared with their score after the pipeline's fine-tuning (the rest of val).
It drives segnas's own code: FMAS's search with uniform proposals, as ``searcher=random
searcher.space=fmas`` runs it (one generation of ``--samples``, scored exactly as NSGA-II's), then, for every
scored sub-network, the fine-tuning ``task=search`` gives a front member (``searcher.finetune``:
lr × 0.1, cosine after warm-up, best of before / each epoch by the held-out train score), scored
on val less the subset the search read. Prints one JSON line per sub-network and a summary line:
τ with a 95 % percentile-bootstrap interval over sub-networks (scipy's ``kendalltau``) and
Spearman's ρ.
"""

from __future__ import annotations

import segnas  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import segnas.run
from segnas import pipeline
from segnas.evaluation import eval_protocol
from segnas.genotype import Genotype
from segnas.nn.elastic import extract, sort_channels
from segnas.report.statistics import kendall
from segnas.searchers.engine import STATE_KEY
from segnas.searchers.fmas.encoding import subnet_config
from segnas.searchers.fmas.scoring import Scorer, preload
from segnas.searchers.fmas.settings import Proposals
from segnas.searchers.registry import registration
from segnas.settings import schema
from segnas.spaces import get_space
from segnas.spaces.autodeeplab.decode import architecture_log_strength
from segnas.tasks.fitting import fit
from segnas.tasks.search import _finetune_config, context
from segnas.training import load_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searcher", choices=("fmas", "auxcell", "autodeeplab"), default="fmas")
    parser.add_argument("--supernet", type=Path, help="FMAS: a trained supernet (model.pt)")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per sub-network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="a Hydra override (data, searcher...)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="segnas-fidelity-"))
    started = time.perf_counter()
    if args.searcher == "auxcell":
        proxy, final, facts = _auxcell(args, out)
    elif args.searcher == "autodeeplab":
        proxy, final, facts = _autodeeplab(args, out)
    else:
        if args.supernet is None:
            parser.error("--searcher fmas needs --supernet")
        proxy, final, facts = _fmas(args, out)
    tau = kendall(proxy, final, seed=args.seed)
    print(
        json.dumps(
            {
                "benchmark": "proxy_fidelity",
                "searcher": args.searcher,
                "architectures": len(proxy),
                "epochs": args.epochs,
                "kendall_tau": round(tau["kendall_tau"], 3),
                "tau_p": tau["tau_p"],
                "tau_ci95": [round(v, 3) for v in tau["tau_ci"]],
                "spearman_rho": round(tau["spearman_rho"], 3),
                **facts,
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "wall_s": round(time.perf_counter() - started, 1),
                "out": str(out),
            }
        )
    )


def _auxcell(args: argparse.Namespace, out: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    overrides = [
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "searcher=auxcell",
        f"seed={args.seed}",
        "searcher.controller.algorithm=uniform",
        f"searcher.children={args.samples}",
        f"searcher.top_k={args.samples}",
        f"retrain.epochs={args.epochs}",
        f"run_dir={out / 'search'}",
        *args.set,
    ]
    with initialize_config_dir(config_dir=segnas.run.CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = pipeline.run(cfg)
    rows = [
        {
            "genotype_hash": e["genotype_hash"],
            "reward": e["search_reward"],
            "val_mIoU": e["val_mIoU"],
            "holdout_mIoU": e.get("holdout_mIoU"),
            "params": e.get("params"),
        }
        for e in summary["retrained"]
    ]
    for row in rows:
        print(json.dumps(row), flush=True)
    return (
        np.array([r["reward"] for r in rows]),
        np.array([r["val_mIoU"] for r in rows]),
        {"proxy": "reward (held-out train)", "final": f"val mIoU after {args.epochs} epochs from scratch"},
    )


def _autodeeplab(args: argparse.Namespace, out: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    common = ["logger=csv", "trainer.enable_progress_bar=false", f"seed={args.seed}", *args.set]
    with initialize_config_dir(config_dir=segnas.run.CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config", overrides=[*common, "searcher=autodeeplab", "retrain.epochs=0", f"run_dir={out / 'search'}"]
        )
    pipeline.run(cfg)
    params = json.loads((out / "search" / "arch_params.json").read_text())
    alpha, beta = torch.tensor(params["alpha"]), torch.tensor(params["beta"])
    decoded = Genotype.load(out / "search" / "genotype.yaml")
    space = get_space("autodeeplab")
    labels = {k: v for k, v in decoded.arch.items() if k not in ("cell", "path")}
    rng = np.random.default_rng(args.seed)
    genotypes = {decoded.hash: decoded}
    while len(genotypes) < args.samples:
        drawn = space.sample(rng, int(cfg.searcher.blocks), int(cfg.searcher.layers), **labels)
        genotypes.setdefault(drawn.hash, drawn)
    rows = []
    for k, genotype in enumerate(genotypes.values()):
        arch_file = genotype.save(out / "archs" / f"{k}_{genotype.hash}.yaml")
        with initialize_config_dir(config_dir=segnas.run.CONFIG_DIR, version_base="1.3"):
            train_cfg = compose(
                "config",
                overrides=[
                    *common,
                    "task=train",
                    f"arch={arch_file}",
                    f"trainer.max_epochs={args.epochs}",
                    f"run_dir={out / 'train' / f'{k}_{genotype.hash}'}",
                ],
            )
        summary = pipeline.run(train_cfg)
        row = {
            "k": k,
            "genotype_hash": genotype.hash,
            "decoded": genotype.hash == decoded.hash,
            "path": genotype.arch["path"],
            "params": summary["params"],
            "strength": architecture_log_strength(alpha, beta, genotype.arch["cell"], genotype.arch["path"]),
            "val_mIoU": summary["val_mIoU"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return (
        np.array([r["strength"] for r in rows]),
        np.array([r["val_mIoU"] for r in rows]),
        {
            "proxy": "alpha/beta log strength (log P(path | beta) + cell log alpha)",
            "final": f"val mIoU after {args.epochs} epochs from scratch (task=train)",
            "decoded_rank": 1 + sorted((r["val_mIoU"] for r in rows), reverse=True).index(rows[0]["val_mIoU"]),
        },
    )


def _fmas(args: argparse.Namespace, out: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    overrides = [
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "searcher=random",
        "searcher.space=fmas",
        f"seed={args.seed}",
        f"searcher.fmas.supernet={args.supernet}",
        f"searcher.fmas.pop_size={args.samples}",
        "searcher.fmas.generations=1",
        f"retrain.epochs={args.epochs}",
        f"run_dir={out / 'search'}",
        *args.set,
    ]
    with initialize_config_dir(config_dir=segnas.run.CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    settings = schema.load(cfg)
    s = settings.searcher.fmas  # FMAS's settings, searched with uniform proposals (its random baseline)
    torch.manual_seed(args.seed)
    (out / "search").mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(cfg.data)
    result = registration("fmas").search()(
        s, context(cfg, settings, out / "search", None, None, datamodule), proposals=Proposals.random
    )
    cache = torch.load(out / "search" / "last.ckpt", map_location="cpu", weights_only=False)[STATE_KEY]["search"]
    records = [r for r in cache["cache"].values() if r.get("feasible") and r.get("miou") is not None]

    _, _, supernet = load_network(args.supernet)
    if s.channel_order == "l1":
        sort_channels(supernet)  # the channels the search sliced
    supernet.eval()
    scorer = Scorer(
        preload(datamodule, datamodule.val_subset(s.val_images)),
        preload(datamodule, datamodule.calib_subset(s.calib_images)) if s.recalibrate_bn else [],
        datamodule.num_classes,
        datamodule.ignore_index,
        s.recalibrate_bn,
        protocol=eval_protocol(cfg),
        batch_size=s.score_batch_size,
    )
    datamodule.reserve_val(datamodule.val_subset(s.val_images).indices)  # report on the rest, as the pipeline
    datamodule.hold_out_train(settings.retrain.holdout)
    tuned_cfg = _finetune_config(cfg, s.finetune)
    rows = []
    for k, record in enumerate(records):
        genotype = Genotype("elastic-deeplabv3plus", record["genotype"])
        net = scorer.prepare(extract(supernet, subnet_config(genotype))).cpu().train()
        fitted = fit(
            tuned_cfg,
            out / "finetune" / f"{k}_{genotype.hash}",
            genotype,
            net,
            datamodule,
            None,
            None,
            max_epochs=args.epochs,
            keep_best=s.finetune.keep_best,
        )
        row = {
            "k": k,
            "genotype_hash": genotype.hash,
            "params": record["params"],
            "macs": record["macs"],
            "proxy_miou": record["miou"],
            "finetuned_val_mIoU": fitted["val_mIoU"],
            "finetuned_holdout_mIoU": fitted["holdout_mIoU"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return (
        np.array([r["proxy_miou"] for r in rows]),
        np.array([r["finetuned_val_mIoU"] for r in rows]),
        {
            "proxy": "val-subset mIoU, inherited weights",
            "final": f"val mIoU (rest) after {args.epochs} epochs of fine-tuning",
            "supernet": str(args.supernet),
            "supernet_miou": result.summary.get("supernet_miou"),
        },
    )


if __name__ == "__main__":
    main()
