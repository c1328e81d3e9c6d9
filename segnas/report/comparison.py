"""The comparison's tables and plot, built only from what search runs wrote to disk
(``summary.json``, ``config.yaml``, FMAS's ``pareto.csv``), so runs gathered from a Hydra
multirun read exactly like runs that ``task=compare`` started itself.

Spread over seeds is the sample standard deviation (n − 1); with one seed it is left blank.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from segnas.errors import ConfigError
from segnas.report import anytime
from segnas.report import statistics as statistics_
from segnas.report.run_dir import write_atomic

#: Per-run columns of comparison.csv, in order.
COLUMNS = (
    "label",
    "seed",
    "status",
    "val_mIoU",
    "finetuned_hypervolume",
    "params",
    "macs",
    "latency_ms",
    "latency_estimated",
    "search_wall_time_s",
    "search_images_seen",
    "search_steps",
    "search_gpu_hours",
    "retrain_epochs",
    "int8_miou",
    "int8_miou_drop",
    "int8_latency_ms",
    "int8_latency_ratio",
    "int8_error",
    "genotype_hash",
    "space",
    "run_dir",
    "error",
)
#: Columns averaged over seeds: (key, heading, scale, digits).
AGGREGATES = (
    ("val_mIoU", "val mIoU", 1.0, 4),
    ("params", "params (M)", 1e-6, 3),
    ("macs", "MACs (G)", 1e-9, 3),
    ("latency_ms", "latency (ms)", 1.0, 2),
    ("search_wall_time_s", "search (min)", 1 / 60, 1),
    ("search_images_seen", "images seen (k)", 1e-3, 1),
    ("int8_miou", "int8 mIoU", 1.0, 4),
    ("int8_latency_ms", "int8 latency (ms)", 1.0, 2),
)
#: Scores paired over seeds after val mIoU, each between the entries that both have it:
#: (key, heading, digits).
PAIRED = (
    ("finetuned_hypervolume", "Hypervolume of the fine-tuned FMAS front (same reference point):", 4),
    ("int8_miou", "Int8 val mIoU of the retrained winner (ONNX Runtime static int8, quantize.*):", 4),
    ("int8_latency_ms", "Int8 latency of the retrained winner (ms, ONNX Runtime; negative: a is faster):", 2),
)


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot be read as a run summary ({err})") from err


def label_of(summary: dict[str, Any]) -> str:
    """The searcher's name; a random baseline is named after the space it searched."""
    if summary.get("task") == "train":  # a hand-designed baseline
        return f"baseline-{summary.get('arch')}"
    name = str(summary.get("searcher"))
    space = summary.get("search_random_space")
    return f"random-{space}" if name == "random" and space else name


def gather(folder: Path) -> list[dict[str, Any]]:
    """Every finished ``task=search`` run under ``folder`` (any depth), e.g. a Hydra multirun."""
    runs = []
    for path in sorted(folder.rglob("summary.json")):
        summary = read_summary(path.parent)
        if summary.get("task") not in ("search", "train"):
            continue
        seed = summary.get("seed")
        if seed is None and (path.parent / "config.yaml").is_file():
            seed = (yaml.safe_load((path.parent / "config.yaml").read_text()) or {}).get("seed")
        runs.append({"label": label_of(summary), "seed": seed, "run_dir": path.parent, "summary": summary})
    return runs


def rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per run: its winner's retrained scores and costs and the search's cost."""
    table = []
    for run in runs:
        summary = run.get("summary") or {}
        row = {key: summary.get(key) for key in COLUMNS}
        row.update(
            label=run["label"],
            seed=run["seed"],
            run_dir=str(run["run_dir"]),
            status="ok" if summary else "failed",
            error=run.get("error"),
        )
        retrained = summary.get("retrained") or []
        row["retrain_epochs"] = max((r.get("epochs") or 0 for r in retrained), default=0)
        table.append(row)
    return table


def aggregate(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per label, in first-seen order: runs, failures, and mean / spread of each aggregate."""
    labels = list(dict.fromkeys(row["label"] for row in table))
    result = []
    for label in labels:
        mine = [r for r in table if r["label"] == label]
        ok = [r for r in mine if r["status"] == "ok"]
        entry: dict[str, Any] = {"label": label, "runs": len(mine), "failed": len(mine) - len(ok)}
        for key, *_ in AGGREGATES:
            values = [float(r[key]) for r in ok if isinstance(r.get(key), (int, float))]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["latency_estimated"] = any(r.get("latency_estimated") for r in ok)
        result.append(entry)
    return result


def _cell(mean: float | None, std: float | None, scale: float, digits: int) -> str:
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def markdown(table: Sequence[dict[str, Any]], command: str) -> str:
    summary = aggregate(table)
    heading = ["searcher", "runs", *(h for _, h, _, _ in AGGREGATES)]
    lines = [
        f"Command: `{command}`",
        "",
        "Mean ± sample standard deviation over seeds of each searcher's retrained winner "
        "(val mIoU on the full validation split; costs of that network; search cost without retraining; "
        "int8: that network quantized as task=quantize does (quantize.*), scored and timed with ONNX Runtime).",
        "",
        "| " + " | ".join(heading) + " |",
        "|" + "---|" * len(heading),
    ]
    for entry in summary:
        runs = f"{entry['runs'] - entry['failed']}/{entry['runs']}"
        cells = [_cell(entry[k], entry[f"{k}_std"], scale, digits) for k, _, scale, digits in AGGREGATES]
        if entry["latency_estimated"]:
            cells[3] += " (estimate)"
        lines.append("| " + " | ".join([entry["label"], runs, *cells]) + " |")
    lines += paired_lines(table)
    lines += anytime.lines(anytime.curves(table))
    lines += [
        "",
        "Per run:",
        "",
        "| searcher | seed | status | val mIoU | params | MACs | latency (ms) | search (s) | images seen "
        "| int8 mIoU | int8 latency (ms) | run |",
        "|" + "---|" * 12,
    ]
    for row in table:
        values = [
            row["label"],
            row["seed"],
            row["status"] if not row.get("error") else f"failed: {row['error']}",
            _number(row["val_mIoU"], 4),
            _number(row["params"]),
            _number(row["macs"]),
            _number(row["latency_ms"], 2),
            _number(row["search_wall_time_s"], 1),
            _number(row["search_images_seen"]),
            _number(row.get("int8_miou"), 4),
            _number(row.get("int8_latency_ms"), 2),
            Path(row["run_dir"]).name,
        ]
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def paired_lines(table: Sequence[dict[str, Any]], level: float = 0.95) -> list[str]:
    """comparison.md's paired statistics: each searcher against its random baseline and against
    each other searcher, on the retrained winners' val mIoU over the seeds both finished (same
    seed: same data split and initialisation), then on each of :data:`PAIRED` for the pairs that
    both have it: the hypervolume of FMAS's fine-tuned front (one reference point when both
    searched one supernet), and the int8 mIoU and latency of the winners (``quantize.in_summary``)."""
    by_label: dict[str, dict[Any, dict[str, Any]]] = {}
    for row in table:
        if row["status"] == "ok":
            by_label.setdefault(row["label"], {})[row["seed"]] = row
    searchers = [label for label in by_label if not label.startswith(("random-", "baseline-"))]
    hand_designed = [label for label in by_label if label.startswith("baseline-")]
    pairs = [(label, f"random-{label}") for label in searchers if f"random-{label}" in by_label]
    pairs += [(a, b) for i, a in enumerate(searchers) for b in searchers[i + 1 :]]
    pairs += [(a, b) for a in searchers for b in hand_designed]
    if not pairs:
        return []
    lines = [
        "",
        f"Paired differences over seeds ({round(100 * level)} % percentile-bootstrap interval of the "
        "mean difference, two-sided Wilcoxon signed-rank test, relative improvement "
        "100 · (a − b) / b as Yang et al. 2020; seeds needed: to resolve a difference of the observed "
        "size with 80 % power, from the observed spread):",
        "",
        "Val mIoU of the retrained winner:",
        "",
        *_paired_section(by_label, pairs, "val_mIoU", level),
    ]

    def has(label: str, key: str) -> bool:
        return any(r.get(key) is not None for r in by_label[label].values())

    for key, heading, digits in PAIRED:
        scored = [(a, b) for a, b in pairs if has(a, key) and has(b, key)]
        if scored:
            lines += ["", heading, "", *_paired_section(by_label, scored, key, level, digits)]
    return lines


def _paired_section(
    by_label: dict[str, dict[Any, dict[str, Any]]],
    pairs: Sequence[tuple[str, str]],
    key: str,
    level: float,
    digits: int = 4,
) -> list[str]:
    """One line per pair ``a − b``: the paired comparison of their runs' ``key`` by seed."""
    return [
        statistics_.describe(
            f"{a} − {b}", statistics_.paired(_scores(by_label[a], key), _scores(by_label[b], key), level), digits
        )
        for a, b in pairs
    ]


def _scores(runs: dict[Any, dict[str, Any]], key: str) -> dict[Any, Any]:
    return {seed: row.get(key) for seed, row in runs.items()}


def _number(value: Any, digits: int = 0) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def write_csv(path: Path, table: Sequence[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return write_atomic(path, buffer.getvalue())


def fronts(
    table: Sequence[dict[str, Any]], cost: str = "latency_ms"
) -> list[tuple[str, Any, list[tuple[float, float]]]]:
    """(label, seed, points): FMAS fronts (search-time mIoU, no fine-tuning) of the runs whose
    pareto.csv priced ``cost``."""
    found = []
    for row in table:
        path = Path(row["run_dir"]) / "pareto.csv"
        if row["status"] != "ok" or not path.is_file():
            continue
        with path.open() as handle:
            points = [(float(r[cost]), float(r["miou"])) for r in csv.DictReader(handle) if r.get(cost)]
        if points:
            found.append((row["label"], row["seed"], sorted(points)))
    return found


def draw(ax: Any, table: Sequence[dict[str, Any]]) -> None:
    """Val mIoU against latency on ``ax``: every winner (filled: NAS, hollow: random baseline)
    and the FMAS fronts (search-time mIoU, thin lines)."""
    labels = list(dict.fromkeys(r["label"] for r in table))
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(lab.removeprefix("random-") for lab in labels))}
    for label in labels:
        points = [
            (r["latency_ms"], r["val_mIoU"])
            for r in table
            if r["label"] == label and r["status"] == "ok" and r["latency_ms"] is not None and r["val_mIoU"] is not None
        ]
        if not points:
            continue
        colour = colours[label.removeprefix("random-")]
        random = label.startswith("random-")
        ax.scatter(
            *zip(*points),
            s=50,
            label=label,
            edgecolors=colour,
            facecolors="none" if random else colour,
            marker="s" if random else "o",
        )
    for label, seed, points in fronts(table):
        ax.step(
            *zip(*points),
            where="post",
            lw=0.8,
            alpha=0.6,
            color=colours[label.removeprefix("random-")],
            linestyle="--" if label.startswith("random-") else "-",
            label=f"front: {label} seed {seed}",
        )
    estimated = any(r.get("latency_estimated") for r in table)
    ax.set_xlabel("latency (ms, estimated)" if estimated else "latency (ms)")
    ax.set_ylabel("val mIoU (retrained winner; fronts: search-time mIoU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot(path: Path, table: Sequence[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw(ax, table)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(run_dir: Path, table: Sequence[dict[str, Any]], command: str) -> dict[str, Path]:
    outputs = {
        "comparison_csv": write_csv(run_dir / "comparison.csv", table),
        "comparison_md": write_atomic(run_dir / "comparison.md", markdown(table, command)),
        "comparison_plot": plot(run_dir / "comparison.png", table),
    }
    curve_plot = anytime.plot(run_dir / "anytime.png", anytime.curves(table))
    if curve_plot is not None:
        outputs["anytime_plot"] = curve_plot
    return outputs
