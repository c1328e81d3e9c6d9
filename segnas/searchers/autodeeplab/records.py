"""What the Auto-DeepLab search leaves behind each epoch: a line in the run's log (``run.log``),
the decoded genotype (``search.csv``, ``genotypes/epoch_NNN.yaml``, a W&B table), α / β pictures
(``arch/``, W&B images) and, at the end, the final α and β raw and normalised
(``arch_params.json``)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from segnas.genotype import Genotype
from segnas.nn.cell_ops import PRIMITIVES
from segnas.report.arch_plots import alpha_heatmap, beta_trellis
from segnas.report.loggers import is_wandb
from segnas.report.run_dir import write_atomic, write_json
from segnas.searchers.autodeeplab.settings import NetworkSettings
from segnas.spaces.autodeeplab import AutoDeepLabSpace
from segnas.spaces.autodeeplab.decode import (
    edges,
    normalise_alpha,
    normalise_beta,
    path_levels,
)

log = logging.getLogger(__name__)
COLUMNS = [
    "epoch",
    "weight_steps",
    "arch_active",
    "weight_loss",
    "arch_loss",
    "val_mIoU",
    "genotype_hash",
    "path",
    "cell",
]


class ArchitectureLog(pl.Callback):
    """Decodes the architecture after every epoch (after validation) on rank 0.

    ``network`` holds the final-network labels (filter multiplier, head widths) that turn a
    decoded cell and path into a buildable genotype. ``search.csv`` keeps the rows of earlier
    epochs across a resume.
    """

    def __init__(self, run_dir: Path, network: NetworkSettings) -> None:
        self.run_dir = Path(run_dir)
        self.network = dataclasses.asdict(network)
        self.rows: list[dict[str, Any]] = []
        csv_path = self.run_dir / "search.csv"
        if csv_path.is_file():
            with csv_path.open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def genotype(self, decoded: dict[str, Any]) -> Genotype:
        """The decoded cell and path with the final-network labels, validated by the space."""
        return AutoDeepLabSpace().genotype({**decoded, **self.network})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        genotype = self.genotype(pl_module.decoded())
        genotype.save(self.run_dir / "genotypes" / f"epoch_{epoch:03d}.yaml")
        metrics = trainer.callback_metrics

        def metric(name: str) -> float | None:
            return round(float(metrics[name]), 5) if name in metrics else None

        self.rows = [row for row in self.rows if int(row["epoch"]) < epoch]
        self.rows.append(
            {
                "epoch": epoch,
                "weight_steps": (epoch + 1) * trainer.num_training_batches,
                "arch_active": pl_module.searching_architecture,
                "weight_loss": metric("search/weight_loss"),
                "arch_loss": metric("search/arch_loss"),
                "val_mIoU": metric("val/mIoU"),
                "genotype_hash": genotype.hash,
                "path": json.dumps(genotype.arch["path"]),
                "cell": json.dumps(genotype.arch["cell"]),
            }
        )
        log.info(describe(self.rows[-1], trainer.max_epochs))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.run_dir / "search.csv", buffer.getvalue())

        supernet = pl_module.supernet
        alpha_png = alpha_heatmap(
            normalise_alpha(supernet.alpha),
            edges(supernet.blocks),
            list(PRIMITIVES),
            self.run_dir / "arch" / f"epoch_{epoch:03d}_alpha.png",
            f"softmax(α), epoch {epoch}",
        )
        beta_png = beta_trellis(
            normalise_beta(supernet.beta.detach().cpu()),
            path_levels(genotype.arch["path"]),
            self.run_dir / "arch" / f"epoch_{epoch:03d}_beta.png",
            f"β and decoded path, epoch {epoch}",
        )
        logger = trainer.logger
        if is_wandb(logger):
            logger.log_image("search/alpha", [str(alpha_png)], step=trainer.global_step)
            logger.log_image("search/beta_path", [str(beta_png)], step=trainer.global_step)
            logger.log_table(
                "search/genotypes", columns=COLUMNS, data=[_typed(row) for row in self.rows], step=trainer.global_step
            )


def describe(row: dict[str, Any], epochs: int) -> str:
    """An epoch's row as one line: its phase, both losses, the supernet's val mIoU, the decoded
    path (stride per layer) and the genotype's hash."""

    def score(name: str) -> str:
        return "n/a" if row[name] is None else f"{row[name]:.4f}"

    phase = "architecture steps" if row["arch_active"] else "warm-up"
    path = " ".join(map(str, json.loads(row["path"])))
    return (
        f"architecture epoch {row['epoch'] + 1}/{epochs} ({phase}): weight loss {score('weight_loss')}, "
        f"arch loss {score('arch_loss')}, supernet val mIoU {score('val_mIoU')}, path {path}, "
        f"genotype {row['genotype_hash']}"
    )


def _typed(row: dict[str, Any]) -> list[Any]:
    """A row as W&B wants it: one type per column, whether it was just made or read back from
    ``search.csv`` after a resume (strings, '' for missing)."""

    def number(value: Any, kind: type) -> Any:
        return None if value in (None, "") else kind(value)

    return [
        number(row["epoch"], int),
        number(row["weight_steps"], int),
        str(row["arch_active"]) == "True",
        number(row["weight_loss"], float),
        number(row["arch_loss"], float),
        number(row["val_mIoU"], float),
        str(row["genotype_hash"]),
        str(row["path"]),
        str(row["cell"]),
    ]


def write_arch_params(path: Path, supernet: Any) -> Path:
    """The final α and β, raw and normalised, with the row / column names needed to read them."""
    alpha, beta = supernet.alpha.detach().cpu(), supernet.beta.detach().cpu()
    return write_json(
        path,
        {
            "ops": list(PRIMITIVES),
            "alpha_rows": [
                f"block{b + 1}<-{'H1' if s == 0 else 'H2' if s == 1 else f'block{s - 1}'}"
                for b, s in edges(supernet.blocks)
            ],
            "alpha": alpha.tolist(),
            "alpha_softmax": normalise_alpha(alpha).tolist(),
            "beta_index": "beta[layer][level][t]: from layer `layer` (0 = stem), stride 4*2^level, to "
            "layer+1 at level+t-1",
            "beta": beta.tolist(),
            "beta_normalised": normalise_beta(beta).tolist(),
        },
    )
