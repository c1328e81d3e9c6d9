"""The Pareto front of the scored sub-networks: non-dominated set, hypervolume, pareto.csv and
the front plot (search scores, and fine-tuned scores once the pipeline has retrained the front).

``pareto.csv`` and ``pareto.png`` have one writer, :func:`write_front`: the search writes them
once it ends (so a run whose fine-tuning crashes keeps its front), and the searcher's
``on_retrained`` hook rewrites both through it with the fine-tuned scores; each file is replaced
atomically, so a reader never sees half of one.

All objectives here are minimised; mIoU (float32 ``miou`` or int8 ``miou_int8``) enters as error
``1 - mIoU`` and costs are divided by the full network's cost, so the hypervolume reference point
is fixed before the search starts and hypervolumes of different runs on the same supernet compare.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segnas.report.run_dir import write_atomic
from segnas.searchers.fmas.settings import ACCURACY

if TYPE_CHECKING:
    from segnas.searchers.fmas.evaluator import SubnetRecord

#: Cost objectives and the record field that holds each (an accuracy objective is its own field).
COST_FIELDS = {"params": "params", "macs": "macs", "latency": "latency_ms"}
#: How the plot's axis names each objective.
LABELS = {
    "miou": "mIoU",
    "miou_int8": "int8 mIoU",
    "params": "parameters",
    "macs": "MACs (FLOPs/2)",
    "latency": "latency (ms)",
}
#: The front's files in the run directory.
PARETO_CSV, PARETO_PLOT = "pareto.csv", "pareto.png"
#: Normalised cost given to a cost that was never measured because a cheaper constraint already
#: rejected the candidate (finite, so pymoo's crowding distance stays defined).
UNMEASURED = 10.0


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``F`` (minimised) that no other row dominates; duplicates all stay."""
    F = np.asarray(F, dtype=float)
    keep = []
    for i in range(len(F)):
        dominated = np.any(np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1))
        if not dominated:
            keep.append(i)
    return np.array(keep, dtype=int)


def objective_matrix(records: Sequence[SubnetRecord], objectives: Sequence[str], scale: dict[str, float]) -> np.ndarray:
    """Minimised, normalised objectives: ``1 - miou`` (``1 - miou_int8``) and each cost over
    ``scale[cost]``.

    A record that was not scored (it broke a constraint) has error 1, the worst possible, and
    costs it never reached count as ``UNMEASURED``.
    """
    rows = []
    for record in records:
        row = []
        for name in objectives:
            if name in ACCURACY:
                row.append(1.0 - record[name] if record.get(name) is not None else 1.0)
            elif record.get(COST_FIELDS[name]) is None:
                row.append(UNMEASURED)
            else:
                row.append(float(record[COST_FIELDS[name]]) / scale[name])
        rows.append(row)
    return np.array(rows, dtype=float).reshape(len(rows), len(objectives))


def hypervolume(F: np.ndarray, reference: Sequence[float]) -> float:
    """pymoo's exact hypervolume of the points of ``F`` that dominate ``reference``."""
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float)
    ref = np.asarray(reference, dtype=float)
    inside = F[np.all(F < ref, axis=1)] if len(F) else F
    return float(HV(ref_point=ref)(inside)) if len(inside) else 0.0


def front_records(
    records: Sequence[SubnetRecord], objectives: Sequence[str], scale: dict[str, float]
) -> list[SubnetRecord]:
    """The scored, feasible records on the front, best first by the accuracy objectives in order
    (duplicates of a hash once)."""
    accuracy = [o for o in objectives if o in ACCURACY]
    scored = [r for r in records if r.get("feasible") and all(r.get(o) is not None for o in accuracy)]
    if not scored:
        return []
    keep = non_dominated(objective_matrix(scored, objectives, scale))
    front = [scored[i] for i in keep]
    return sorted(
        front, key=lambda r: (*(-r[o] for o in accuracy), *(r[COST_FIELDS[o]] for o in objectives if o in COST_FIELDS))
    )


def pick(front: Sequence[SubnetRecord], k: int) -> list[SubnetRecord]:
    """``k`` records spread along the front (sorted best first): the best and the cheapest
    always, the rest evenly between them."""
    if k <= 0 or len(front) <= k:
        return list(front)
    positions = sorted({round(float(p)) for p in np.linspace(0, len(front) - 1, k)})
    return [front[p] for p in positions]


def write_front(
    run_dir: Path,
    records: Sequence[SubnetRecord],
    front: Sequence[SubnetRecord],
    objectives: Sequence[str],
    finetuned: dict[str, float] | None = None,
) -> tuple[Path, Path]:
    """``pareto.csv`` and ``pareto.png`` of ``front`` (among every scored ``records``; the first
    objective of ``objectives``, an accuracy, against the first cost) in ``run_dir``, with the
    fine-tuned mIoU of the members in ``finetuned`` (by hash) when given: the one writer of both files."""
    estimated = any(r.get("latency_estimated") for r in front)
    cost = next(o for o in objectives if o in COST_FIELDS)
    return (
        _pareto_csv(run_dir / PARETO_CSV, front, objectives, finetuned),
        _plot_front(run_dir / PARETO_PLOT, records, front, objectives[0], cost, finetuned, estimated),
    )


def _pareto_csv(
    path: Path, front: Sequence[SubnetRecord], objectives: Sequence[str], finetuned: dict[str, float] | None = None
) -> Path:
    """One row per front member: hash, genotype (JSON), every objective and score (the float32
    ``miou`` always; ``miou_int8`` beside it when scored), and whether (and to what float32 mIoU)
    the pipeline fine-tuned it."""
    finetuned = finetuned or {}
    scores = ["miou", *(["miou_int8"] if any("miou_int8" in r for r in front) else [])]
    costs = [COST_FIELDS[o] for o in objectives if o in COST_FIELDS]
    extra = [
        f
        for f in ("params", "macs", "latency_ms", "latency_spread_ms")
        if f not in costs and any(f in r for r in front)
    ]
    columns = ["genotype_hash", "genotype", *scores, *costs, *extra, "latency_estimated", "finetuned", "finetuned_miou"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for record in front:
        writer.writerow(
            {
                **record,
                "genotype": json.dumps(record["genotype"], sort_keys=True),
                "finetuned": record["genotype_hash"] in finetuned,
                "finetuned_miou": finetuned.get(record["genotype_hash"], ""),
            }
        )
    return write_atomic(path, buffer.getvalue())


def _plot_front(
    path: Path,
    records: Sequence[SubnetRecord],
    front: Sequence[SubnetRecord],
    accuracy: str,
    cost: str,
    finetuned: dict[str, float] | None = None,
    estimated: bool = False,
) -> Path:
    """One accuracy against one cost: every scored sub-network, the front, and (when given, and
    the accuracy is float32 mIoU, which fine-tuning is scored by) each fine-tuned front member's
    mIoU after fine-tuning, joined to its search score by an arrow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    field = COST_FIELDS[cost]
    label = LABELS[cost]
    if cost == "latency" and estimated:
        label = "latency (ms, ESTIMATE)"
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    scored = [r for r in records if r.get(accuracy) is not None]
    ax.scatter([r[field] for r in scored], [r[accuracy] for r in scored], s=12, c="0.7", label="scored")
    ordered = sorted(front, key=lambda r: r[field])
    ax.plot(
        [r[field] for r in ordered],
        [r[accuracy] for r in ordered],
        "o-",
        c="tab:blue",
        label="front (search, no fine-tuning)",
    )
    if finetuned and accuracy == "miou":
        tuned = [r for r in front if r["genotype_hash"] in finetuned]
        ax.scatter(
            [r[field] for r in tuned],
            [finetuned[r["genotype_hash"]] for r in tuned],
            marker="*",
            s=120,
            c="tab:red",
            zorder=3,
            label="front after fine-tuning",
        )
        for r in tuned:
            ax.annotate(
                "",
                xy=(r[field], finetuned[r["genotype_hash"]]),
                xytext=(r[field], r["miou"]),
                arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 0.8},
            )
    ax.set_xlabel(label)
    ax.set_ylabel(LABELS[accuracy])
    ax.set_title("FMAS Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(temporary, format="png")
    plt.close(fig)
    os.replace(temporary, path)
    return path
