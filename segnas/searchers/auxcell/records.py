"""What the search leaves in the run directory: the columns of ``search.csv`` (one row per child,
written by the engine's record files), each child's line in ``run.log`` and the reward curve. The
resumable state travels in the Lightning checkpoint (:mod:`.module`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = (
    "child", "round", "rank", "status", "reward", "stage1_reward", "stage2_reward", "stopped_early", "mIoU", "fwIoU",
    "pixel_acc", "mean_class_acc", "RMSE", "REL", "delta1", "genotype_hash", "encoding", "cell", "params", "search_params",
    "stage1_steps", "stage2_steps", "stage1_s", "stage2_s", "child_s", "controller_update_s", "baseline", "advantage", "entropy",
    "log_prob", "error",
)


def describe(record: dict[str, Any], children: int) -> str:
    """The child's line in the run's log (``run.log``): index (as in search.csv) and count, what
    became of it, its reward and each stage's, its seconds and its cell."""
    if record["status"] == "failed":
        status = f"failed ({record.get('error')})"
    elif record["status"] == "stage2_failed":
        status = f"failed in stage 2 ({record.get('error')}), stage-1 reward kept"
    else:
        status = "stopped early after stage 1" if record.get("stopped_early") else "ok"
    stages = ", ".join(f"stage {k} {record[f'stage{k}_reward']:.4f}" for k in (1, 2)
                       if record.get(f"stage{k}_reward") is not None)
    return (f"child {record['child']} ({record['child'] + 1}/{children}): {status}, reward {record['reward']:.4f}"
            f"{f' ({stages})' if stages else ''}, {float(record.get('child_s') or 0.0):.1f} s, cell {record['cell']}")


def plot_rewards(path: Path, records: list[dict[str, Any]]) -> Path | None:
    """Reward per child (failures as red crosses at the reward the controller got, early-stopped
    children hollow) and the baseline."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    done = [r for r in records if r["status"] == "ok"]
    full = [r for r in done if not r["stopped_early"]]
    stopped = [r for r in done if r["stopped_early"]]
    failed = [r for r in records if r["status"] != "ok"]
    axis.scatter([r["child"] for r in full], [r["reward"] for r in full], s=14, label="stage 2")
    axis.scatter([r["child"] for r in stopped], [r["reward"] for r in stopped], s=14, facecolors="none",
                 edgecolors="tab:blue", label="stopped after stage 1")
    if failed:
        axis.scatter([r["child"] for r in failed], [r["reward"] for r in failed], marker="x", color="tab:red",
                     label="failed")
    axis.plot([r["child"] for r in records], [r["baseline"] for r in records], color="tab:orange", label="baseline")
    axis.set_xlabel("child")
    axis.set_ylabel("reward")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
