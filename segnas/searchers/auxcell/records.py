"""What the search leaves in the run directory: the columns of ``search.csv`` (one row per child,
written by the engine's record files), each child's line in ``run.log`` and the reward curve. The
resumable state travels in the Lightning checkpoint (:mod:`.module`).

A child's row is a :class:`ChildRecord`: what the round code measured (:class:`ChildResult`,
:func:`.trial.run_round`) and what the search adds, written once where the child's record is
created (:meth:`.module.AuxCellSearchModule.run_unit`). Records stay plain dicts at run time, so
checkpoints and ``search.csv`` are unchanged by the types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict

#: ``ok``: scored (after stage 1, or stage 2 when it ran); ``failed``: stage 1 raised or
#: diverged (reward 0); ``stage2_failed``: stage 2 did (the stage-1 reward is kept).
Status = Literal["ok", "failed", "stage2_failed"]

COLUMNS = (
    "child",
    "round",
    "rank",
    "status",
    "reward",
    "stage1_reward",
    "stage2_reward",
    "stopped_early",
    "mIoU",
    "fwIoU",
    "pixel_acc",
    "mean_class_acc",
    "RMSE",
    "REL",
    "delta1",
    "genotype_hash",
    "encoding",
    "cell",
    "params",
    "search_params",
    "stage1_steps",
    "stage2_steps",
    "stage1_s",
    "stage2_s",
    "child_s",
    "controller_update_s",
    "baseline",
    "advantage",
    "entropy",
    "log_prob",
    "error",
)


class _Measured(TypedDict, total=False):
    """What a child has only when it was measured: each stage's steps, reward and seconds, the
    task's held-out scores (segmentation: mIoU, fwIoU, pixel_acc, mean_class_acc; depth: RMSE,
    REL, delta1; the last stage's), and the parameters it trained with (encoder included)."""

    search_params: int
    stage1_steps: int
    stage1_reward: float
    stage1_s: float
    stage2_steps: int
    stage2_reward: float
    stage2_s: float
    mIoU: float
    fwIoU: float
    pixel_acc: float
    mean_class_acc: float
    RMSE: float
    REL: float
    delta1: float


class ChildResult(_Measured):
    """A child's outcome from the round code: ``reward`` is what the controller learns from."""

    child: int
    status: Status
    error: str | None
    reward: float
    stopped_early: bool
    child_s: float


class ChildRecord(ChildResult):
    """A row of ``search.csv`` (:data:`COLUMNS`; ``genotype`` is kept for the checkpoint and
    the candidates, not written): the result, where and when the child was trained, its
    genotype at the final width, and the controller's side."""

    round: int
    rank: int
    genotype_hash: str
    genotype: dict[str, Any]
    encoding: str
    cell: str
    params: int
    controller_update_s: float
    controller_sample_s: float
    baseline: float
    advantage: float
    entropy: float
    log_prob: float


def describe(record: ChildRecord, children: int) -> str:
    """The child's line in the run's log (``run.log``): index (as in search.csv) and count, what
    became of it, its reward and each stage's, its seconds and its cell."""
    if record["status"] == "failed":
        status = f"failed ({record.get('error')})"
    elif record["status"] == "stage2_failed":
        status = f"failed in stage 2 ({record.get('error')}), stage-1 reward kept"
    else:
        status = "stopped early after stage 1" if record.get("stopped_early") else "ok"
    stages = ", ".join(
        f"stage {k} {record[f'stage{k}_reward']:.4f}" for k in (1, 2) if record.get(f"stage{k}_reward") is not None
    )
    return (
        f"child {record['child']} ({record['child'] + 1}/{children}): {status}, reward {record['reward']:.4f}"
        f"{f' ({stages})' if stages else ''}, {float(record.get('child_s') or 0.0):.1f} s, cell {record['cell']}"
    )


def plot_rewards(path: Path, records: list[ChildRecord]) -> Path | None:
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
    axis.scatter(
        [r["child"] for r in stopped],
        [r["reward"] for r in stopped],
        s=14,
        facecolors="none",
        edgecolors="tab:blue",
        label="stopped after stage 1",
    )
    if failed:
        axis.scatter(
            [r["child"] for r in failed], [r["reward"] for r in failed], marker="x", color="tab:red", label="failed"
        )
    axis.plot([r["child"] for r in records], [r["baseline"] for r in records], color="tab:orange", label="baseline")
    axis.set_xlabel("child")
    axis.set_ylabel("reward")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
