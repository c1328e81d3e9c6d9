"""``task=profile``: params, MACs and latency of an architecture, printed as one JSON line (the
last line of stdout) and written to ``profile.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from segnas import spaces
from segnas.report.run_dir import write_config, write_json
from segnas.tasks.fitting import weights
from segnas.tasks.summary import architecture, costs


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).resolve()
    genotype = spaces.resolve_arch(cfg.arch)
    net = spaces.build(genotype, int(cfg.data.num_classes), **weights(cfg))
    write_config(run_dir, cfg)
    summary = {
        "task": "profile",
        "arch": str(cfg.arch),
        **architecture(genotype, int(cfg.data.num_classes)),
        **costs(cfg, net, tuple(cfg.profile.input_size)),
    }
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    write_json(run_dir / "profile.json", summary)
    write_json(run_dir / "summary.json", summary)
    print(json.dumps(summary), flush=True)
    return summary
