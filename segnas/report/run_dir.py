"""The run directory: refusing to overwrite a finished run, and writing files atomically.

A crash half-way through writing ``summary.json`` must not leave a truncated file that a later
comparison reads as a result, hence write-to-temporary-then-rename.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segnas.errors import ConfigError

#: Files whose presence means the directory already holds a user's run.
RUN_OUTPUTS = ("last.ckpt", "summary.json")


def write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    """Rewrite a record file (one row per epoch, child, generation...) atomically; missing and
    None values are empty cells, keys outside ``columns`` are left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in columns})
    return write_atomic(path, buffer.getvalue())


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_config(run_dir: Path, cfg: DictConfig) -> Path:
    return write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def resume_checkpoint(run_dir: Path, resume: Any) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run.

    ``resume=true`` continues the run in ``run_dir`` itself (set ``hydra.run.dir`` to it);
    ``resume=<run dir or .ckpt>`` continues another run into this new directory, leaving the old
    one untouched. Without ``resume``, a directory that already holds a run is refused.
    """
    if resume in (None, False, "", "false", "False"):
        existing = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
        if existing:
            raise ConfigError(
                f"run directory {run_dir} already holds a run ({', '.join(existing)}); pass "
                "resume=true to continue it, or choose another hydra.run.dir"
            )
        return None
    source = run_dir if resume is True or str(resume).lower() == "true" else Path(str(resume))
    checkpoint = source / "last.ckpt" if source.is_dir() else source
    if not checkpoint.is_file():
        raise ConfigError(f"resume={resume}: no checkpoint at {checkpoint}")
    return checkpoint
