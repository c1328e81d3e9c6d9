"""``python -m segnas.run``: Hydra composes conf/, ``segnas.pipeline.run`` does the work.

User mistakes (``SegnasError``) are printed as one line naming the key or file, exit code 2.
"""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import segnas.offline_weights  # noqa: F401  (registers ${segnas_imagenet:...}, read by conf/searcher/auxcell.yaml)
from segnas.errors import SegnasError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

#: Random per process, so two runs started in the same second never share a run directory.
RUN_ID = secrets.token_hex(3)
OmegaConf.register_new_resolver("segnas_run_id", lambda: RUN_ID, replace=True)

log = logging.getLogger("segnas")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from segnas import pipeline

    try:
        pipeline.run(cfg)
    except SegnasError as err:
        log.error("%s: %s", type(err).__name__, err)
        print(f"segnas: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
