"""``python -m segnas.run``: Hydra composes conf/, ``segnas.pipeline.run`` does the work.

User mistakes are printed as one line naming the key or file, exit code 2: a key of the wrong
type or not among its choices when Hydra composes the config against the schemas
(:mod:`segnas.settings.schema`), anything else the settings or the data check refuse
(``SegnasError``) when the job starts. ``HYDRA_FULL_ERROR=1`` shows Hydra's own report instead.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import segnas.offline_weights  # noqa: F401  (registers ${segnas_imagenet:...}, read by conf/searcher/auxcell.yaml)
from segnas.errors import SegnasError
from segnas.settings import schema

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
FULL_ERROR = "HYDRA_FULL_ERROR"
#: The exit code of a mistake in the user's config or data.
USER_ERROR = 2

#: Random per process, so two runs started in the same second never share a run directory.
RUN_ID = secrets.token_hex(3)
OmegaConf.register_new_resolver("segnas_run_id", lambda: RUN_ID, replace=True)
schema.register()

log = logging.getLogger("segnas")


def _refuse(message: str) -> None:
    print(f"segnas: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _job(cfg: DictConfig) -> None:
    from segnas import pipeline

    try:
        pipeline.run(cfg)
    except SegnasError as err:
        log.error("%s: %s", type(err).__name__, err)
        _refuse(str(err))


def composition_error(err: Exception) -> str:
    """A composition error on one line: omegaconf's reason naming the key where there is one
    (a type or a choice), else Hydra's message with its lines joined (an unknown group option,
    with the options there are)."""
    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return schema.one_line(cause)
    message = str(err).split("Config search path")[0]  # Hydra appends where it looked, line by line
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines)


def main() -> None:
    """Compose and run; a composition error (a wrongly typed key, a value not among its choices,
    an unknown key or group option) is one line, exit 2, unless the user asked for Hydra's full
    report. Hydra reports its errors itself and exits 1 unless ``HYDRA_FULL_ERROR`` is set, so it
    is set here for the length of the call and the error is caught on its way out."""
    if os.environ.get(FULL_ERROR):
        _job()
        return
    os.environ[FULL_ERROR] = "1"
    try:
        _job()
    except (HydraException, OmegaConfBaseException) as err:
        _refuse(composition_error(err))
    finally:
        os.environ.pop(FULL_ERROR, None)


if __name__ == "__main__":
    main()
